"""The README's Python API example runs as written, on a small simulated layout."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_python_api_example_runs(small_layout, monkeypatch):
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## The Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    root = small_layout()
    monkeypatch.chdir(root.parent)
    code = code.replace('collect("predictions")', f'collect({str(root)!r})')
    code = code.replace("seeds=[1, 2, 3]", "seeds=[1]")  # one seed keeps the test fast
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert namespace["result"].members and 0 < namespace["result"].nested_cv <= 1
    oof, _ = namespace["level2"].combined([1])
    assert oof.shape == namespace["collection"].y.shape
