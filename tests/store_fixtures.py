"""Store test fixtures: a real PostgreSQL server, a store URL on both backends, sample results.

* ``pg_admin_url`` (session): ``$CTRLENS_TEST_PG_URL`` if set (a role allowed to CREATE DATABASE),
  else a throw-away server started from Debian's binaries (``/usr/lib/postgresql/*/bin``): a temp
  data dir owned by ``postgres`` (the server refuses to run as root, so it runs through ``runuser``
  when we are root), listening on 127.0.0.1 on a free port, fsync off; stopped at the end. Without
  binaries it skips with the reason -- and fails when ``CI=true``.
* ``store_url`` (parametrised ``sqlite`` / ``postgresql``): a fresh, empty database per test.
* ``make_results(...)``: one day's results of every kind, with NaN, None and JSON values.

Import fixtures through tests/conftest.py (it loads this module); import the plain helpers by name.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_ENV = "CTRLENS_TEST_PG_URL"


def _skip_or_fail(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def pg_bindir() -> Path | None:
    """The newest Debian PostgreSQL server bin dir holding initdb and pg_ctl."""
    found = []
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        p = Path(d)
        if (p / "initdb").exists() and (p / "pg_ctl").exists():
            try:
                found.append((int(p.parent.name), p))
            except ValueError:
                found.append((0, p))
    return max(found)[1] if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _PgServer:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="ctrlens-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, *args: str, timeout: float = 120) -> None:
        cmd = (["runuser", "-u", "postgres", "--"] if self.as_root else []) + list(args)
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({res.returncode}): {res.stderr.strip()} {log}")

    def start(self) -> str:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync",
                  "-E", "UTF8", "--locale=C")  # fmt: skip
        opts = (f"-h 127.0.0.1 -p {self.port} -k {self.root} -F -c full_page_writes=off "
                "-c synchronous_commit=off -c max_connections=60")  # fmt: skip
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """URL of a PostgreSQL database whose role may create databases (see module docstring)."""
    if os.environ.get(PG_ENV):
        yield os.environ[PG_ENV]
        return
    bindir = pg_bindir()
    if bindir is None:
        _skip_or_fail(f"PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb); install Debian's "
                      f"postgresql package or set {PG_ENV}")  # fmt: skip
    server = _PgServer(bindir)  # type: ignore[arg-type]
    try:
        url = server.start()
    except Exception as e:  # noqa: BLE001 - report why the server did not come up
        with contextlib.suppress(Exception):
            server.stop()
        _skip_or_fail(f"could not start a PostgreSQL server from {bindir}: {e}")
    try:
        yield url
    finally:
        server.stop()


def _pg_admin(admin_url: str, sql: str) -> None:
    import psycopg

    from ctrlens.store.engine import normalize_url

    u = normalize_url(admin_url)
    with psycopg.connect(
        host=u.host, port=u.port or 5432, user=u.username, password=u.password, dbname=u.database or "postgres", autocommit=True
    ) as conn:
        conn.execute(sql)


def new_pg_database(admin_url: str) -> str:
    """Create an empty database next to ``admin_url``'s; returns its URL."""
    from ctrlens.store.engine import normalize_url

    name = f"ctrlens_t_{uuid.uuid4().hex[:12]}"
    _pg_admin(admin_url, f'CREATE DATABASE "{name}"')
    return normalize_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(admin_url: str, url: str) -> None:
    from ctrlens.store.engine import normalize_url

    name = normalize_url(url).database
    _pg_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.sqlite'}"
        return
    admin = request.getfixturevalue("pg_admin_url")
    url = new_pg_database(admin)
    try:
        yield url
    finally:
        drop_pg_database(admin, url)


# ------------------------------------------------------------------------------ sample results


def make_results(seed: int = 0, *, layers: dict[str, int] | None = None, n_fields: int = 4, heads: tuple[str, ...] = ("ctr", "cvr"),
                 tag: float = 0.0) -> list:  # fmt: skip
    """One day's results of every kind (NaN, None, numpy values and JSON with NaN/inf included).

    ``tag`` is added to every neuron mean, so tests can tell whose write a stored set came from.
    """
    from ctrlens.results import Result

    rng = np.random.default_rng(seed)
    layers = layers or {"mlp.0": 6, "mlp.1": 4}
    fields = [f"f{i}" for i in range(n_fields)]
    out = []
    out.append(Result("field_stats", pd.DataFrame({
        "field": fields, "kind": ["sparse"] * (n_fields - 1) + ["dense"], "rows": [1000 + i for i in range(n_fields)],
        "coverage": rng.random(n_fields), "missing_rate": rng.random(n_fields), "oov_rate": [np.nan] + list(rng.random(n_fields - 1)),
        "cardinality": np.arange(n_fields, dtype=np.int64) * 7, "mean": [np.nan] * (n_fields - 1) + [3.5],
        "std": rng.random(n_fields),
        "top_json": [[[int(v), float(s)] for v, s in zip(rng.integers(2, 50, 3), rng.random(3))] + [["__other__", 0.25]] for _ in fields],
        "hist_json": [{"edges": [-np.inf, 0.0, 1.0, np.inf], "counts": rng.integers(0, 100, 3)} for _ in fields],
    }), {"day": "x", "sample": 1000}))  # fmt: skip
    ns_rows = []
    for layer, width in layers.items():
        for n in range(width):
            ns_rows.append({"layer": layer, "neuron": n, "count": 4096, "mean": float(rng.normal()) + tag, "std": float(rng.random()),
                            "min": -1.0, "max": 2.0, "frac_zero": float(rng.random()), "frac_saturated": 0.0,
                            "mean_click": float(rng.normal()), "mean_noclick": np.nan if n == 1 else float(rng.normal()),
                            "hist_json": rng.integers(0, 50, 5).tolist()})  # fmt: skip
    out.append(Result("neuron_stats", pd.DataFrame(ns_rows), {"edges": "per layer"}))
    out.append(Result("layer_stats", pd.DataFrame({
        "layer": list(layers), "activation": ["relu"] * len(layers), "n_neurons": list(layers.values()), "count": [4096] * len(layers),
        "dead_fraction": rng.random(len(layers)), "saturated_fraction": [0.0] * len(layers), "mean_abs": rng.random(len(layers)),
        "edges_json": [[-np.inf, -1.0, 0.0, 1.0, np.inf]] * len(layers),
        "projection_json": [{"x": rng.random(3).tolist(), "y": [0.1, np.nan, 0.3], "label": [0, 1, 0]} for _ in layers],
    })))  # fmt: skip
    out.append(Result("embedding_health", pd.DataFrame({
        "table": ["item", "category"], "rows": [1002, 52], "dim": [16, 8], "seen_rows": [500, 40],
        "never_updated_frac": [0.1, 0.0], "norm_mean": rng.random(2), "norm_p50": rng.random(2), "norm_p99": rng.random(2),
        "effective_rank": [11.5, 7.9], "info_abundance": [9.1, np.nan], "hist_json": [{"edges": [0, 1, 2], "counts": [3, 4]}, None],
    })))  # fmt: skip
    out.append(Result("probe", pd.DataFrame({
        "layer": [lay for lay in layers for _ in heads], "head": [h for _ in layers for h in heads],
        "train_day": "2026-01-01", "eval_day": "2026-01-02", "n_train": 2000, "n_eval": 1000,
        "auc": rng.random(len(layers) * len(heads)), "logloss": rng.random(len(layers) * len(heads)), "model_auc": 0.75,
        "gap": rng.random(len(layers) * len(heads)),
    })))  # fmt: skip
    sal = [(f, h, m) for f in fields for h in heads for m in ("saliency", "integrated_gradients")]
    out.append(Result("saliency", pd.DataFrame({
        "field": [s[0] for s in sal], "head": [s[1] for s in sal], "method": [s[2] for s in sal], "rows": 512,
        "mean": rng.random(len(sal)), "std": rng.random(len(sal)), "p50": rng.random(len(sal)), "p90": rng.random(len(sal)),
        "share": rng.random(len(sal)), "delta": [np.nan if s[2] == "saliency" else 0.01 for s in sal],
    }), {"method_params": {"n_steps": 16}}))  # fmt: skip
    out.append(Result("quality", pd.DataFrame({
        "head": list(heads), "rows": [10000] * len(heads), "positives": [500] * len(heads), "auc": rng.random(len(heads)),
        "gauc": [np.nan] + list(rng.random(len(heads) - 1)), "logloss": rng.random(len(heads)), "ne": rng.random(len(heads)),
        "calibration": rng.random(len(heads)), "mean_pred": rng.random(len(heads)), "actual_rate": rng.random(len(heads)),
        "score_hist_json": [{"edges": [0, 0.5, np.inf], "counts": [1, 2]} for _ in heads],
    })))  # fmt: skip
    out.append(Result("drift", pd.DataFrame({
        "subject_kind": ["field", "field", "neuron"], "subject": ["f0", "f1", "mlp.0/3"], "statistic": ["psi", "psi", "js"],
        "method": ["ref_mean+4std(trailing 14d)"] * 3, "value": [0.3, 0.01, np.nan], "reference": [0.02, 0.02, 0.1],
        "threshold": [0.2, 0.2, 0.3], "direction": ["above"] * 3, "alert": [True, False, False],
    })))  # fmt: skip
    out.append(Result("alert", pd.DataFrame({
        "finding": ["distribution_shift", "dead_neurons"], "subject": ["f0", "mlp.1"], "severity": ["critical", "warning"],
        "score": [0.9, 0.4], "title": ["f0 shifted", "mlp.1 has dead neurons"],
        "evidence_json": [{"psi": 0.3, "link": "/fields/f0"}, {"dead": [1, 2], "ratio": np.nan}], "action": ["check the f0 pipeline", None],
    })))  # fmt: skip
    return out
