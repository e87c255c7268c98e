"""The Python example in docs/python-api.md runs as written."""

import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "reference" / "python-api.md"


def test_python_api_example_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], str(DOC), "exec"), {"__name__": "docs_example"})
    out = capsys.readouterr().out
    assert "alignment" in out and "tensor([-0.2500, -1.0000])" in out and "[-4.0]" in out
    assert (tmp_path / "runs" / "api-example" / "summary.json").exists()
