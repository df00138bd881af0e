"""Docs that run: extract the fenced code blocks of a Markdown page and execute them in order.

Used by ``tests/test_docs_run.py`` (one pytest test per page) and runnable on its own::

    .venv/bin/python tests/docs_runner.py docs/probes.md          # run one page, print a report
    .venv/bin/python tests/docs_runner.py --list docs/*.md README.md   # what would run / be skipped

The conventions (which blocks run, the working directory, ``$CTRLENS_REPO``, ``../shared``, the
``<!-- docs-test: ... -->`` markers) are documented for writers in ``docs/index.md``, "Conventions
for docs". In short:

* ``python`` blocks of one page run in one namespace, like notebook cells; ``bash``/``sh`` blocks
  run with ``bash -eo pipefail``; in ``console`` blocks the lines starting with ``$ `` are the
  commands (the other lines are output and are not run). Blocks in the known display-only
  languages (``text``, ``json``, ``sql``, ``yaml``, ``ini``, no language, ...) are not run; any
  other language fails the page, so that a typo (``pyhton``) never silently skips an example.
* Each page runs in a fresh empty working directory ``<tmp>/work`` next to ``<tmp>/shared``, a link
  to the shared datasets folder, so the docs' relative paths (``../shared/data/...``) resolve as
  they do from the repository root. ``$CTRLENS_REPO`` is the repository root, the venv's ``bin`` is
  first on ``PATH``, ``$CTRLENS_DB`` is unset and ``OMP_NUM_THREADS=1`` unless set.
* Markers, an HTML comment right before a block (blank lines may separate them)::

      <!-- docs-test: skip reason="serves forever; covered by tests/test_dashboard_*" -->
      <!-- docs-test: timeout=300 -->        (seconds; default 180)
      <!-- docs-test: exit=2 -->             (a bash/console block that must fail with this code)
      <!-- docs-test: serve="http://127.0.0.1:8050/" expect="ctrlens" -->
                                             (a bash/console block that serves until stopped: it passes
                                              once the URL answers 200 with that text, then is stopped)

  ``<!-- docs-test: slow -->`` anywhere marks the whole page's test ``@pytest.mark.slow``;
  ``<!-- docs-test: requires="postgresql" -->`` (or ``shared-data``, ``cuda``) skips the page where
  that is missing (fails in CI, except ``cuda``); a multi-line ``<!-- docs-test: setup`` comment
  holding a fenced block is run but not shown.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

#: languages that are executed, with their aliases
RUN_LANGS = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash", "console": "console"}
#: languages that are shown only (output, file contents, SQL for a DBA, unit files, ...)
SHOW_LANGS = {
    "", "text", "txt", "plain", "output", "log", "json", "jsonc", "yaml", "yml", "toml", "ini", "cfg", "conf",
    "sql", "csv", "tsv", "html", "xml", "diff", "crontab", "cron", "systemd", "dockerfile", "mermaid", "markdown", "md",
}
DEFAULT_TIMEOUT = 180.0
SHARED_MARKERS = ("../shared", "CTRLENS_SHARED")

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*docs-test:(?P<body>.*?)(?P<close>-->)?\s*$")
_TOKEN = re.compile(r'(?P<key>[a-z][a-z-]*)(?:=(?:"(?P<q>[^"]*)"|(?P<v>[^\s"]+)))?')
_WORDS = {"skip", "slow", "setup"}
_KEYS = {"reason", "timeout", "exit", "requires", "serve", "expect"}
#: what a page may require (``<!-- docs-test: requires="postgresql" -->``); see :func:`unmet`
REQUIREMENTS = ("postgresql", "shared-data", "cuda")


class DocsError(Exception):
    """A page that cannot be run as written (unknown language, bad or dangling marker)."""


@dataclass
class Block:
    """One fenced code block of a page. ``line`` is the 1-based line of its opening fence."""

    page: str
    line: int
    lang: str  # "python" | "bash" | "console" (normalised)
    code: str
    skip: str | None = None  # the reason, when marked skip
    timeout: float = DEFAULT_TIMEOUT
    exit: int = 0
    hidden: bool = False
    serve: str | None = None  # a URL the block serves until stopped (see _run_server)
    expect: str | None = None  # text the served page must contain

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line} ({self.lang}{', hidden setup' if self.hidden else ''})"


@dataclass
class Page:
    path: str
    blocks: list[Block] = field(default_factory=list)
    slow: bool = False
    shown: int = 0  # display-only blocks
    requires: set[str] = field(default_factory=set)

    @property
    def needs_shared(self) -> bool:
        return "shared-data" in self.requires or any(
            m in b.code for b in self.blocks if b.skip is None for m in SHARED_MARKERS)


def unmet(page: Page) -> list[str]:
    """The page's requirements this machine lacks, each with the reason (empty: it can run).

    ``shared-data``: the shared datasets folder (also implied by ``../shared`` or ``CTRLENS_SHARED`` in
    a runnable block); ``postgresql``: Debian's PostgreSQL server binaries (the page starts a
    throw-away server of its own, as the store tests do); ``cuda``: a CUDA device.
    """
    out = []
    if page.needs_shared and not SHARED.is_dir():
        out.append(f"shared-data: the shared datasets folder {SHARED} is absent")
    if "postgresql" in page.requires and not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        out.append("postgresql: no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb; Debian package postgresql)")
    if "cuda" in page.requires:
        try:
            import torch

            ok = torch.cuda.is_available()
        except Exception:  # noqa: BLE001
            ok = False
        if not ok:
            out.append("cuda: no CUDA device")
    return out


def _parse_directive(body: str, where: str) -> dict:
    out: dict = {}
    for m in _TOKEN.finditer(body):
        key, val = m.group("key"), m.group("q") if m.group("q") is not None else m.group("v")
        if val is None:
            if key not in _WORDS:
                raise DocsError(f"{where}: unknown docs-test marker {key!r} (known: {sorted(_WORDS | _KEYS)})")
            out[key] = True
        else:
            if key not in _KEYS:
                raise DocsError(f"{where}: unknown docs-test option {key!r} (known: {sorted(_KEYS)})")
            out[key] = val
    rest = _TOKEN.sub("", body).strip()
    if rest:
        raise DocsError(f"{where}: cannot read docs-test marker text {rest!r} (write key=\"value\")")
    if out.get("skip") and not out.get("reason"):
        raise DocsError(f'{where}: a skip needs a reason: <!-- docs-test: skip reason="..." -->')
    return out


def console_commands(code: str) -> str:
    """The commands of a ``console`` block: ``$ `` lines and their ``\\`` continuations."""
    cmds: list[str] = []
    cont = False
    for raw in code.splitlines():
        line = raw.strip()
        if cont:
            cmds[-1] += "\n" + raw
            cont = line.endswith("\\")
        elif line.startswith("$ ") or line == "$":
            cmds.append(line[2:])
            cont = line.endswith("\\")
    return "\n".join(cmds) + ("\n" if cmds else "")


def parse_page(path: str | Path, root: Path = ROOT) -> Page:
    """All runnable blocks of a Markdown page, with their markers; raises :class:`DocsError`."""
    p = Path(path)
    rel = str(p.resolve().relative_to(root)) if p.resolve().is_relative_to(root) else str(p)
    lines = p.read_text(encoding="utf-8").splitlines()
    page = Page(rel)
    pending: tuple[int, dict] | None = None  # (line, directive) waiting for its block
    hidden_depth = False  # inside a multi-line docs-test setup comment
    i = 0
    while i < len(lines):
        line = lines[i]
        d = _DIRECTIVE.match(line)
        if d and not hidden_depth:
            where = f"{rel}:{i + 1}"
            opts = _parse_directive(d.group("body"), where)
            if opts.pop("slow", False):
                page.slow = True
            if "requires" in opts:
                for r in opts.pop("requires").split(","):
                    if r.strip() not in REQUIREMENTS:
                        raise DocsError(f"{where}: unknown requirement {r.strip()!r} (known: {list(REQUIREMENTS)})")
                    page.requires.add(r.strip())
            if opts.get("setup"):
                if d.group("close"):
                    raise DocsError(f"{where}: a setup marker must be a multi-line comment holding a fenced block")
                hidden_depth = True
                pending = (i + 1, opts)
                i += 1
                continue
            if opts:
                if pending is not None:
                    raise DocsError(f"{rel}:{pending[0]}: docs-test marker not followed by a code block")
                pending = (i + 1, opts)
            if not d.group("close"):
                raise DocsError(f"{where}: a docs-test marker must close on its line (-->), except setup")
            i += 1
            continue
        if hidden_depth and line.strip() == "-->":
            hidden_depth = False
            i += 1
            continue
        if not hidden_depth and line.lstrip().startswith("<!--") and "-->" not in line:
            # an ordinary multi-line comment: nothing inside it runs
            while i < len(lines) and "-->" not in lines[i]:
                i += 1
            i += 1
            continue
        f = _FENCE.match(line)
        if f:
            indent, fence, info = f.group("indent"), f.group("fence"), f.group("info").strip()
            lang = info.split()[0].lower() if info else ""
            lang = lang.strip("{}.")  # ```{python} / ```.python
            body: list[str] = []
            j = i + 1
            closer = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
            while j < len(lines) and not closer.match(lines[j]):
                t = lines[j]
                body.append(t[len(indent):] if t.startswith(indent) else t.lstrip())
                j += 1
            if j >= len(lines):
                raise DocsError(f"{rel}:{i + 1}: code fence is never closed")
            opts = pending[1] if pending else {}
            pending = None
            if lang in RUN_LANGS:
                code = "\n".join(body) + "\n"
                norm = RUN_LANGS[lang]
                b = Block(rel, i + 1, norm, console_commands(code) if norm == "console" else code,
                          skip=opts.get("reason") if opts.get("skip") else None,
                          timeout=float(opts.get("timeout", DEFAULT_TIMEOUT)), exit=int(opts.get("exit", 0)),
                          hidden=bool(opts.get("setup")), serve=opts.get("serve"), expect=opts.get("expect"))
                if b.exit and norm == "python":
                    raise DocsError(f"{rel}:{i + 1}: exit= applies to bash/console blocks only")
                if b.serve and (norm == "python" or not b.serve.startswith("http://127.0.0.1:")):
                    raise DocsError(f"{rel}:{i + 1}: serve= needs a bash/console block and a http://127.0.0.1:PORT/ URL")
                if b.expect and not b.serve:
                    raise DocsError(f"{rel}:{i + 1}: expect= goes with serve=")
                page.blocks.append(b)
            elif lang in SHOW_LANGS:
                if opts and not hidden_depth:
                    raise DocsError(f"{rel}:{i + 1}: docs-test marker on a {lang or 'plain'!r} block, which never runs")
                page.shown += 1
            else:
                raise DocsError(
                    f"{rel}:{i + 1}: code block in unknown language {lang!r}: use one of "
                    f"{sorted(set(RUN_LANGS))} (run) or {sorted(SHOW_LANGS - {''})} / none (shown only)"
                )
            i = j + 1
            continue
        if pending is not None and line.strip() and not hidden_depth:
            raise DocsError(f"{rel}:{pending[0]}: docs-test marker not right before a code block")
        i += 1
    if hidden_depth:
        raise DocsError(f"{rel}: docs-test setup comment never closed (-->)")
    if pending is not None:
        raise DocsError(f"{rel}:{pending[0]}: docs-test marker at the end of the page, before no block")
    return page


# --------------------------------------------------------------------------------------------
# running


def page_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment blocks run in (see the module docstring)."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["CTRLENS_REPO"] = str(ROOT)
    if SHARED.is_dir():
        env["CTRLENS_SHARED"] = str(SHARED)
    env.pop("CTRLENS_DB", None)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "120"  # rich tables / typer help: a stable width in captured output
    return env


def prepare_workdir(base: Path) -> Path:
    """``base/work`` (empty, the cwd) and ``base/shared`` (a link to the shared datasets)."""
    work = base / "work"
    work.mkdir(parents=True, exist_ok=False)
    if SHARED.is_dir() and not (base / "shared").exists():
        (base / "shared").symlink_to(SHARED, target_is_directory=True)
    return work


@dataclass
class Outcome:
    where: str
    line: int
    lang: str
    status: str  # passed | failed | skipped | timeout | not-run
    seconds: float = 0.0
    reason: str = ""
    output: str = ""


def _tail(s: str, n: int = 6000) -> str:
    return s if len(s) <= n else "...\n" + s[-n:]


class _Timeout(Exception):
    pass


def _alarm(signum, frame):  # pragma: no cover - only on a hung python block
    raise _Timeout()


def execute(blocks: list[Block], workdir: Path, report: Path | None = None) -> list[Outcome]:
    """Run the blocks in order in this process (python) and subprocesses (bash) -- the child side.

    Stops at the first failure; the blocks after it are ``not-run``. Each outcome is appended to
    ``report`` (JSON lines) as soon as it is known, so a killed run still says how far it got.
    """
    ns: dict = {"__name__": "__main__"}
    out: list[Outcome] = []
    failed = False
    sys.argv = [blocks[0].page if blocks else "docs"]
    for b in blocks:
        if failed:
            o = Outcome(b.where, b.line, b.lang, "not-run", reason="an earlier block failed")
        elif b.skip is not None:
            o = Outcome(b.where, b.line, b.lang, "skipped", reason=b.skip)
        else:
            t0 = time.perf_counter()
            o = _run_python(b, ns, workdir) if b.lang == "python" else _run_shell(b, workdir)
            o.seconds = round(time.perf_counter() - t0, 2)
            failed = o.status != "passed"
        out.append(o)
        if report is not None:
            with report.open("a") as f:
                f.write(json.dumps(asdict(o)) + "\n")
    return out


_SHELL: subprocess.Popen | None = None  # the bash block running now (its own process group)


def _kill_shell() -> None:
    if _SHELL is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(_SHELL.pid, signal.SIGKILL)  # bash and whatever it started (a server, torchrun's workers)


def _on_term(signum, frame):  # pragma: no cover - the page ran out of time
    _kill_shell()
    raise SystemExit(143)


def _serving(url: str, expect: str | None) -> str | None:
    """The page at ``url`` when it answers 200 (and holds ``expect``), else None."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=3) as r:  # noqa: S310 - a loopback URL (checked at parse time)
            body = r.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return body if expect is None or expect in body else None


def _run_server(b: Block, workdir: Path) -> Outcome:
    """A block that serves until stopped: start it, wait until its URL answers, then stop it.

    Pages run in parallel (xdist) and docs name fixed ports, so one file lock per port serialises the
    servers; nothing may answer on the port before the block starts (it would be someone else's).
    """
    import fcntl

    global _SHELL
    port = b.serve.split(":")[2].split("/")[0]
    with open(Path(tempfile.gettempdir()) / f"ctrlens-docs-port-{port}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _serving(b.serve, None) is not None:
            return Outcome(b.where, b.line, b.lang, "failed", reason=f"{b.serve} already answers before the block started")
        with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as log:
            _SHELL = p = subprocess.Popen(["bash", "-c", "set -eo pipefail\n" + b.code], cwd=workdir, env=os.environ.copy(),
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            status, reason = "timeout", f"{b.serve} did not answer within {b.timeout:.0f} s"
            try:
                deadline = time.monotonic() + b.timeout
                while time.monotonic() < deadline:
                    if p.poll() is not None:
                        status, reason = "failed", f"exited with code {p.returncode} before serving {b.serve}"
                        break
                    if _serving(b.serve, b.expect) is not None:
                        status, reason = "passed", ""
                        break
                    time.sleep(0.5)
            finally:
                _kill_shell()
                p.wait()
                _SHELL = None
            log.seek(0)
            out = log.read()
    return Outcome(b.where, b.line, b.lang, status, reason=reason, output=_tail(out, 2000 if status == "passed" else 6000))


def _run_shell(b: Block, workdir: Path) -> Outcome:
    global _SHELL
    if b.serve:
        return _run_server(b, workdir)
    script = "set -eo pipefail\n" + b.code
    # output to a file, not a pipe: a background job left running must not keep us waiting for EOF
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as log:
        _SHELL = p = subprocess.Popen(["bash", "-c", script], cwd=workdir, env=os.environ.copy(), stdin=subprocess.DEVNULL,
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            p.wait(timeout=b.timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_shell()  # leave nothing behind: the block's background jobs, or all of it after a timeout
            p.wait()
            _SHELL = None
        log.seek(0)
        out = log.read()
    if timed_out:
        return Outcome(b.where, b.line, b.lang, "timeout", reason=f"still running after {b.timeout:.0f} s", output=_tail(out))
    if p.returncode != b.exit:
        want = f"exit code {b.exit}" if b.exit else "success"
        return Outcome(b.where, b.line, b.lang, "failed", reason=f"exit code {p.returncode}, expected {want}",
                       output=_tail(out))
    return Outcome(b.where, b.line, b.lang, "passed", output=_tail(out, 2000))


def _run_python(b: Block, ns: dict, workdir: Path) -> Outcome:
    os.chdir(workdir)
    buf = io.StringIO()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, b.timeout)
    try:
        # pad so that tracebacks show the page's own line numbers
        code = compile("\n" * b.line + b.code, b.page, "exec")
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            exec(code, ns)
    except _Timeout:
        return Outcome(b.where, b.line, b.lang, "timeout", reason=f"still running after {b.timeout:.0f} s",
                       output=_tail(buf.getvalue()))
    except BaseException as e:  # noqa: BLE001 - report anything, SystemExit included
        if isinstance(e, SystemExit) and e.code in (0, None):
            return Outcome(b.where, b.line, b.lang, "passed", output=_tail(buf.getvalue(), 2000))
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        return Outcome(b.where, b.line, b.lang, "failed", reason=f"{type(e).__name__}: {e}",
                       output=_tail(buf.getvalue() + "\n" + tb))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    return Outcome(b.where, b.line, b.lang, "passed", output=_tail(buf.getvalue(), 2000))


def run_page(page: Page, base: Path, *, env: dict[str, str] | None = None, timeout: float | None = None) -> list[Outcome]:
    """Run a parsed page in a child process with its own working directory under ``base``."""
    work = prepare_workdir(base)
    spec = base / "blocks.json"
    report = base / "outcomes.jsonl"
    spec.write_text(json.dumps([asdict(b) for b in page.blocks]))
    total = timeout if timeout is not None else sum(b.timeout for b in page.blocks if b.skip is None) + 60
    cmd = [sys.executable, str(Path(__file__).resolve()), "--exec", str(spec), "--report", str(report)]
    log = base / "child.log"
    with log.open("w") as lf:
        proc = subprocess.Popen(cmd, cwd=work, env=page_env(env), stdin=subprocess.DEVNULL, stdout=lf,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=total)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)  # the runner kills its running bash block's group, then exits
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    outcomes = [Outcome(**json.loads(x)) for x in report.read_text().splitlines()] if report.exists() else []
    if len(outcomes) < len(page.blocks):
        b = page.blocks[len(outcomes)]
        why = f"the page's runner died (exit code {proc.returncode})" if proc.returncode else "the page ran out of time"
        outcomes.append(Outcome(b.where, b.line, b.lang, "failed", reason=why, output=_tail(log.read_text())))
    return outcomes


def format_report(page: Page, outcomes: list[Outcome]) -> str:
    lines = [f"{page.path}: {len(page.blocks)} runnable block(s), {page.shown} shown-only"]
    for o in outcomes:
        extra = f" -- {o.reason}" if o.reason else ""
        lines.append(f"  {o.status:8s} {o.where} {o.seconds:6.1f} s{extra}")
    return "\n".join(lines)


def failure_message(page: Page, outcomes: list[Outcome]) -> str | None:
    bad = next((o for o in outcomes if o.status in ("failed", "timeout")), None)
    if bad is None:
        return None
    block = next(b for b in page.blocks if b.line == bad.line)
    code = "\n".join(f"    {ln}" for ln in block.code.rstrip().splitlines())
    return (f"{bad.where}: {bad.status}: {bad.reason}\n--- the block ---\n{code}\n--- its output ---\n{bad.output}\n"
            f"--- page report ---\n{format_report(page, outcomes)}")


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run the code blocks of Markdown pages (docs that run).")
    ap.add_argument("pages", nargs="*", help="Markdown pages (default: docs/*.md and README.md)")
    ap.add_argument("--list", action="store_true", help="list the blocks and their markers; run nothing")
    ap.add_argument("--keep", action="store_true", help="keep the working directories (printed)")
    ap.add_argument("--exec", dest="exec_spec", help=argparse.SUPPRESS)
    ap.add_argument("--report", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.exec_spec:  # the child: run the blocks in this process
        signal.signal(signal.SIGTERM, _on_term)
        blocks = [Block(**d) for d in json.loads(Path(a.exec_spec).read_text())]
        outs = execute(blocks, Path.cwd(), Path(a.report) if a.report else None)
        return 0 if all(o.status in ("passed", "skipped") for o in outs) else 1
    pages = a.pages or [*sorted(str(p) for p in (ROOT / "docs").glob("*.md")), str(ROOT / "README.md")]
    rc = 0
    for path in pages:
        try:
            page = parse_page(path)
        except DocsError as e:
            print(f"{path}: ERROR: {e}")
            rc = 1
            continue
        if a.list:
            print(f"{page.path}: {len(page.blocks)} runnable, {page.shown} shown-only{', slow' if page.slow else ''}")
            for b in page.blocks:
                first = b.code.strip().splitlines()[0] if b.code.strip() else ""
                state = f"skip: {b.skip}" if b.skip is not None else "run"
                print(f"  {b.line:5d} {b.lang:8s} {state:40.40s} {shlex.quote(first)[:70]}")
            continue
        base = Path(tempfile.mkdtemp(prefix="ctrlens-docs-"))
        outs = run_page(page, base)
        print(format_report(page, outs))
        msg = failure_message(page, outs)
        if msg:
            print(msg)
            rc = 1
        if a.keep:
            print(f"  working directory kept: {base / 'work'}")
        else:
            import shutil

            shutil.rmtree(base, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(_main())
