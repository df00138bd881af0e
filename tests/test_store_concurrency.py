"""Atomicity for real, on SQLite and PostgreSQL: writers in separate processes, one SIGKILLed
mid-transaction, two writing the same day at once.

The writers are forked (multiprocessing "fork"): separate processes with their own connections,
without paying Python's start-up and imports again. Each opens its own Store; the parent disposes
its pool before forking, so no connection is shared.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import time
import traceback
from typing import Any

import numpy as np

from ctrlens.store import Store
from store_fixtures import make_results

DAY = "2026-01-02"
_FORK = mp.get_context("fork")


def _writer(url: str, vid: int, tag: int, pause: float, width: int, q: Any, go: Any) -> None:
    """Write DAY; right after its bulk insert of neuron rows reached the database -- inside the
    transaction, the previous rows already deleted -- report "MID" and sleep ``pause`` s."""
    try:
        store = Store(url)
        results = make_results(seed=tag, layers={"mlp.0": width, "mlp.1": width // 2}, tag=float(tag))
        bulk_insert = store._insert_rows

        def _insert_then_pause(conn, table, names, rows):  # type: ignore[no-untyped-def]
            bulk_insert(conn, table, names, rows)
            if table.name == "neuron_stats":  # the new neuron rows are in the database, uncommitted
                q.put(("MID", tag))
                time.sleep(pause)

        store._insert_rows = _insert_then_pause  # type: ignore[method-assign]
        q.put(("READY", tag))
        if go is not None and not go.wait(120):
            raise TimeoutError("no go signal")
        run_id = store.write_day(vid, DAY, "nightly", results, params={"writer": tag})
        q.put(("DONE", tag, run_id))
    except BaseException:
        q.put(("ERROR", tag, traceback.format_exc()))
        raise


def _expect(q: Any, word: str, n: int = 1, timeout: float = 120) -> list[tuple]:
    got: list[tuple] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        try:
            msg = q.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"writers did not reach {word} in {timeout}s") from None
        if msg[0] == "ERROR":
            raise AssertionError(f"writer {msg[1]} failed:\n{msg[2]}")
        if msg[0] == word:
            got.append(msg)
    return got


def _writer_tags(store: Store, vid: int) -> set[int]:
    """Which writers' neuron rows are stored for the day (means are normal noise + tag)."""
    ns = store.read(vid, DAY, "neuron_stats").frame
    return set(np.round(ns["mean"].to_numpy() / 1000).astype(int) * 1000)


def test_writer_killed_mid_transaction_leaves_the_previous_day_intact(store_url: str) -> None:
    with Store(store_url, create=True) as store:
        vid = store.register_model("din", "ck", "s")
        before = make_results(seed=0, layers={"mlp.0": 50, "mlp.1": 20})
        run_id = store.write_day(vid, DAY, "nightly", before, params={"writer": 0})
        store.engine.dispose()  # nothing of ours is inherited by the writer
        q = _FORK.Queue()
        proc = _FORK.Process(target=_writer, args=(store_url, vid, 7000, 600.0, 6000, q, None))  # a big write, hangs midway
        proc.start()
        try:
            _expect(q, "MID")
            os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
            proc.join(60)
        finally:
            if proc.is_alive():
                proc.kill()
        assert proc.exitcode == -signal.SIGKILL

        # Nothing of the killed run is visible; the previous complete result set is intact.
        for r in before:
            back = store.read(vid, DAY, r.kind)
            assert back is not None and len(back.frame) == len(r.frame), r.kind
        assert _writer_tags(store, vid) == {0}
        runs = store.runs()
        assert runs.run_id.tolist() == [run_id] and runs.params[0] == {"writer": 0} and runs.status[0] == "complete"
        # ... and the killed writer's locks are gone: the day can be written again at once.
        after = make_results(seed=5, layers={"mlp.0": 10})
        assert store.write_day(vid, DAY, "nightly", after, params={"writer": 5}) == run_id
        assert len(store.read(vid, DAY, "neuron_stats").frame) == 10


def test_two_processes_writing_the_same_day_end_with_one_complete_set(store_url: str) -> None:
    with Store(store_url, create=True) as store:
        vid = store.register_model("din", "ck", "s")
        store.write_day(vid, DAY, "nightly", make_results(seed=0, layers={"mlp.0": 10}))
        store.engine.dispose()
        q, go = _FORK.Queue(), _FORK.Event()
        # each writer pauses 0.5 s inside its transaction: unserialised, their rows would interleave
        procs = [_FORK.Process(target=_writer, args=(store_url, vid, tag, 0.5, 300, q, go)) for tag in (1000, 2000)]
        for p in procs:
            p.start()
        try:
            _expect(q, "READY", n=2)
            go.set()  # both start their write now
            done = _expect(q, "DONE", n=2)
            for p in procs:
                p.join(60)
        finally:
            for p in procs:
                if p.is_alive():
                    p.kill()
        assert [p.exitcode for p in procs] == [0, 0]
        assert len({msg[2] for msg in done}) == 1  # one slot, one run id

        tags = _writer_tags(store, vid)
        assert len(tags) == 1, f"rows of several writers mixed: {tags}"
        winner = tags.pop()
        assert winner == done[-1][1]  # the writer that committed last
        want = {r.kind: r for r in make_results(seed=winner, layers={"mlp.0": 300, "mlp.1": 150}, tag=float(winner))}
        for kind, r in want.items():
            back = store.read(vid, DAY, kind)
            assert back is not None and len(back.frame) == len(r.frame), kind
        np.testing.assert_array_equal(store.read(vid, DAY, "quality").frame["auc"], want["quality"].frame["auc"])
        assert store.runs().params[0] == {"writer": winner}
        assert len(store.alerts()) == 2
