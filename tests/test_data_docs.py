"""The complete example of docs/data-format.md runs as written and prints what its comments say."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "data-format.md"


def test_doc_example_runs(tmp_path, monkeypatch, capsys):
    text = DOC.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    example = next(b for b in blocks if "schema.save(root)" in b)
    monkeypatch.chdir(tmp_path)
    exec(compile(example, str(DOC), "exec"), {})
    exec(compile(example, str(DOC), "exec"), {})  # re-running replaces the days instead of appending
    out = capsys.readouterr().out
    assert "['2026-01-01', '2026-01-02']" in out
    assert "tensor([5, 1])" in out
    assert "torch.Size([2, 3, 8, 8]) tensor([1, 0])" in out
    assert "{'user_id': 0, 'item_id': 1, 'device': 1, 'hist_item_id': 0, 'price': 0}" in out
    assert len(list((tmp_path / "my-dataset" / "day=2026-01-01").glob("*.parquet"))) == 1
