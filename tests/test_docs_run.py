"""Docs that run: every ``bash``/``sh``/``console``/``python`` block of docs/*.md and README.md is executed.

One test per page (``test_page_runs[docs/probes.md]``), in a fresh working directory, blocks in order,
python blocks sharing one namespace (see ``tests/docs_runner.py`` and docs/index.md "Conventions for
docs"). A page fails when an unmarked block fails, names an unknown language, or carries a bad
``docs-test`` marker; skipped blocks are printed with their reasons. The harness itself is tested on
small pages written here.
"""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest

import docs_runner as dr

ROOT = dr.ROOT
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
IN_CI = os.environ.get("CI", "").lower() == "true"


def _param(p: Path):
    rel = str(p.relative_to(ROOT))
    try:
        slow = dr.parse_page(p).slow
    except dr.DocsError:
        slow = False  # reported by the test itself
    return pytest.param(p, id=rel, marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("page_path", [_param(p) for p in PAGES])
def test_page_runs(page_path: Path, tmp_path: Path, record_property) -> None:
    try:
        page = dr.parse_page(page_path)
    except dr.DocsError as e:
        pytest.fail(f"cannot run the page as written: {e}", pytrace=False)
    if not any(b.skip is None for b in page.blocks):  # nothing to run: the page passes as written
        for b in page.blocks:
            print(f"skipped {b.where}: {b.skip}")
        return
    missing = dr.unmet(page)
    if missing:
        reason = f"{page.path} needs " + "; ".join(missing)
        if IN_CI and not all(m.startswith("cuda") for m in missing):
            pytest.fail(f"required in CI: {reason}", pytrace=False)
        pytest.skip(reason)
    outcomes = dr.run_page(page, tmp_path)
    report = dr.format_report(page, outcomes)
    print(report)  # shown with -s, or with the failure
    skipped = [f"{o.where}: {o.reason}" for o in outcomes if o.status == "skipped"]
    record_property("docs_skipped", "; ".join(skipped))
    msg = dr.failure_message(page, outcomes)
    if msg:
        pytest.fail(msg, pytrace=False)


# ------------------------------------------------------------------------------------------------
# the harness on pages written here


def _page(tmp_path: Path, text: str, name: str = "page.md") -> Path:
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text))
    return p


def _run(tmp_path: Path, text: str):
    page = dr.parse_page(_page(tmp_path, text), root=tmp_path)
    return page, dr.run_page(page, tmp_path / "run")


def test_blocks_run_in_order_sharing_a_namespace_and_a_fresh_workdir(tmp_path: Path) -> None:
    page, outs = _run(tmp_path, '''
        # A page

        ```bash
        echo hello > greeting.txt
        test "$(ls)" = greeting.txt   # the working directory started empty
        test -d "$CTRLENS_REPO/ctrlens"
        ```

        ```python
        from pathlib import Path
        text = Path("greeting.txt").read_text().strip()
        ```

        ```json
        {"not": "run"}
        ```

        ```
        plain text, not run
        ```

        ```console
        $ python -c "print('from console')" > console.txt
        from console
        $ ctrlens --help > /dev/null
        ```

        ```python
        assert text == "hello"  # the namespace of the first python block
        assert Path("console.txt").read_text().strip() == "from console"
        ```
    ''')
    assert [b.lang for b in page.blocks] == ["bash", "python", "console", "python"]
    assert page.shown == 2
    assert [o.status for o in outs] == ["passed"] * 4, dr.failure_message(page, outs)


def test_failure_names_page_and_line_and_stops_the_page(tmp_path: Path) -> None:
    page, outs = _run(tmp_path, '''
        Intro.

        ```python
        x = 1
        ```

        ```python
        y = x +
        ```

        ```bash
        echo never
        ```
    ''')
    assert [o.status for o in outs] == ["passed", "failed", "not-run"]
    msg = dr.failure_message(page, outs)
    assert msg.startswith("page.md:8 (python): failed: SyntaxError")
    assert 'File "page.md", line 9' in msg  # tracebacks carry the page's line numbers

    page, outs = _run(tmp_path / "b", '''
        ```bash
        true
        false
        echo "set -e: not reached"
        ```
    ''')
    assert outs[0].status == "failed" and "exit code 1" in outs[0].reason
    assert "not reached" not in outs[0].output


def test_markers_skip_expect_exit_and_timeout(tmp_path: Path) -> None:
    page, outs = _run(tmp_path, '''
        <!-- docs-test: skip reason="serves forever; covered elsewhere" -->
        ```bash
        sleep 1000
        ```

        <!-- docs-test: exit=2 -->
        ```bash
        ctrlens data validate no-such-dataset
        ```

        <!-- docs-test: timeout=1 -->

        ```python
        import time
        time.sleep(30)
        ```
    ''')
    assert [(o.status, o.reason) for o in outs][:2] == [("skipped", "serves forever; covered elsewhere"), ("passed", "")]
    assert outs[2].status == "timeout"
    assert "skipped  page.md:3 (bash)" in dr.format_report(page, outs)


def test_a_timed_out_block_leaves_no_process_behind(tmp_path: Path) -> None:
    page, outs = _run(tmp_path, '''
        <!-- docs-test: timeout=2 -->
        ```bash
        sleep 300 & echo $! > sleeper.pid
        wait
        ```

        ```bash
        sleep 300 & echo $! > left-behind.pid
        ```
    ''')
    assert outs[0].status == "timeout"
    page, outs = _run(tmp_path / "b", '''
        ```bash
        sleep 300 & echo $! > left-behind.pid
        ```
    ''')
    assert outs[0].status == "passed"
    for pid_file in (tmp_path / "run" / "work" / "sleeper.pid", tmp_path / "b" / "run" / "work" / "left-behind.pid"):
        pid = int(pid_file.read_text())
        time.sleep(0.2)
        assert not _alive(pid), f"process {pid} still running"


def test_a_serving_block_passes_when_its_url_answers_and_is_stopped(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a free loopback port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    page, outs = _run(tmp_path, f'''
        <!-- docs-test: serve="http://127.0.0.1:{port}/" expect="hello-docs" -->
        ```bash
        mkdir -p site && echo hello-docs > site/index.html
        echo $$ > server.pid
        exec python -m http.server {port} --bind 127.0.0.1 --directory site
        ```

        <!-- docs-test: serve="http://127.0.0.1:{port}/" timeout=20 -->
        ```bash
        echo "no such database" >&2; exit 2
        ```
    ''')
    assert outs[0].status == "passed", dr.failure_message(page, outs)
    pid = int((tmp_path / "run" / "work" / "server.pid").read_text())
    time.sleep(0.2)
    assert not _alive(pid), "the server was left running"
    assert outs[1].status == "failed" and "exited with code 2 before serving" in outs[1].reason
    assert "no such database" in outs[1].output
    with pytest.raises(dr.DocsError, match="serve= needs a bash/console block"):
        dr.parse_page(_page(tmp_path, '<!-- docs-test: serve="http://example.org/" -->\n```bash\ntrue\n```\n'), root=tmp_path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie has exited; only its parent's wait is missing
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


def test_hidden_setup_runs_and_slow_page_marker(tmp_path: Path) -> None:
    page, outs = _run(tmp_path, '''
        <!-- docs-test: slow -->
        <!-- docs-test: setup
        ```bash
        echo 42 > answer.txt
        ```
        -->

        <!--
        an ordinary comment: this block does not run
        ```bash
        exit 1
        ```
        -->

        ```bash
        test "$(cat answer.txt)" = 42
        ```
    ''')
    assert page.slow and page.blocks[0].hidden and len(page.blocks) == 2
    assert [o.status for o in outs] == ["passed", "passed"]


def test_shared_folder_resolves_like_from_the_repo_root(tmp_path: Path) -> None:
    if not dr.SHARED.is_dir():
        pytest.skip(f"shared folder not found at {dr.SHARED}")
    page, outs = _run(tmp_path, '''
        ```bash
        test -f ../shared/data/README.md
        test -f "$CTRLENS_SHARED/data/README.md"
        ```
    ''')
    assert page.needs_shared
    assert outs[0].status == "passed", dr.failure_message(page, outs)


@pytest.mark.parametrize(
    "text, message",
    [
        ("```pyhton\nprint(1)\n```\n", "unknown language 'pyhton'"),
        ('<!-- docs-test: skip -->\n```bash\ntrue\n```\n', "a skip needs a reason"),
        ('<!-- docs-test: skp reason="x" -->\n```bash\ntrue\n```\n', "unknown docs-test marker 'skp'"),
        ('<!-- docs-test: skip reason="x" -->\nSome text.\n```bash\ntrue\n```\n', "not right before a code block"),
        ('<!-- docs-test: skip reason="x" -->\n```json\n{}\n```\n', "on a 'json' block, which never runs"),
        ("```bash\ntrue\n", "never closed"),
        ('```bash\ntrue\n```\n<!-- docs-test: timeout=5 -->\n', "at the end of the page"),
    ],
)
def test_pages_that_cannot_run_as_written_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(dr.DocsError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        dr.parse_page(_page(tmp_path, text), root=tmp_path)
    assert "page.md:" in str(e.value)


def test_page_requirements(tmp_path: Path) -> None:
    page = dr.parse_page(_page(tmp_path, '<!-- docs-test: requires="postgresql,cuda" -->\n```bash\ntrue\n```\n'), root=tmp_path)
    assert page.requires == {"postgresql", "cuda"}
    assert {m.split(":")[0] for m in dr.unmet(page)} <= {"postgresql", "cuda"}
    with pytest.raises(dr.DocsError, match="unknown requirement 'gpu'"):
        dr.parse_page(_page(tmp_path, '<!-- docs-test: requires="gpu" -->\n'), root=tmp_path)


def test_console_commands_and_continuations() -> None:
    code = "$ ctrlens synth --out w \\\n    --days 2\nsome output\n$ echo done\ndone\n"
    assert dr.console_commands(code) == "ctrlens synth --out w \\\n    --days 2\necho done\n"
