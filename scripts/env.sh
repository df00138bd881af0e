# Sourced by demo.sh and test.sh: make sure .venv holds torch (CPU by default) and ctrlens.
#
# torch is installed first and pinned on its own, so the install of ctrlens never pulls another
# build. Defaults: TORCH_SPEC="torch==2.13.0" (a CPU wheel where this project is developed and tested).
# Overrides (see README, "CPU and CUDA"):
#   TORCH_SPEC='torch==2.13.0' TORCH_INDEX_URL=<PyTorch's CPU wheel index>   # CPU wheel elsewhere
#   TORCH_SPEC='torch==2.13.0' TORCH_INDEX_URL=<PyTorch's CUDA 12.x index>   # a CUDA machine
#   CTRLENS_PYTHON=python3.12                                                   # another interpreter
set -euo pipefail
CTRLENS_PYTHON="${CTRLENS_PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
VENV="${VENV:-.venv}"
# The integration extras (docs/torchrec.md, docs/deepctr-torch.md) are installed too, so their tests run.
CTRLENS_EXTRAS="${CTRLENS_EXTRAS:-dev,torchrec,deepctr}"
TORCHREC_SPEC="${TORCHREC_SPEC:-torchrec==1.8.0}"

if ! "$CTRLENS_PYTHON" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null; then
  echo "ctrlens needs Python >= 3.10 ($CTRLENS_PYTHON is $("$CTRLENS_PYTHON" --version 2>&1 || echo missing))" >&2
  exit 2
fi
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$CTRLENS_PYTHON" -m venv "$VENV" 2>/dev/null; then
    # Debian ships venv separately; install it when we may.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      rm -rf "$VENV"; "$CTRLENS_PYTHON" -m venv "$VENV"
    else
      echo "cannot create a virtualenv: install python3-venv (Debian: sudo apt-get install python3-venv)" >&2
      exit 2
    fi
  fi
fi
stamp="$VENV/.ctrlens-installed"
want="$(cat pyproject.toml scripts/env.sh | sha256sum | cut -c1-16) $TORCH_SPEC ${TORCH_INDEX_URL:-}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> installing into $VENV ($TORCH_SPEC, then ctrlens and its dependencies)"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "$VENV/bin/python" -m pip install -q "$TORCH_SPEC" --index-url "$TORCH_INDEX_URL"
  else
    "$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
  fi
  "$VENV/bin/python" -m pip install -q -e ".[$CTRLENS_EXTRAS]"
  if [[ ",$CTRLENS_EXTRAS," == *",torchrec,"* ]]; then
    # torchrec's own metadata asks for `fbgemm-gpu` (the CUDA build, with another torch): install it
    # without deps; the torchrec extra brought what it needs (fbgemm-gpu-cpu, tensordict, torchmetrics...).
    "$VENV/bin/python" -m pip install -q --no-deps "$TORCHREC_SPEC"
  fi
  "$VENV/bin/python" - "$TORCH_SPEC" <<'PY'
import sys, torch  # no extra may have replaced the pinned torch
spec = sys.argv[1]
if "==" in spec and torch.__version__.split("+")[0] != spec.split("==", 1)[1].split("+")[0]:
    sys.exit(f"torch {torch.__version__} is installed but {spec} was pinned: a dependency replaced it")
PY
  echo "$want" > "$stamp"
fi
