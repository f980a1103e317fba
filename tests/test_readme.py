"""The README's code blocks run as written."""

import re
from pathlib import Path


def test_readme_quickstart_runs():
    text = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the README has no python block"
    namespace: dict = {}  # blocks build on each other, as a reader runs them in order
    for code in blocks:
        exec(compile(code, "README.md", "exec"), namespace)
