"""The README and the pages of docs/: their code runs as written, their links resolve, and
the bad-input table names tests that exist."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]

# Pages whose python blocks continue the README's quickstart (`model`, `train`, `x`, `y`,
# `li`), in the order a reader would run them after it.
PAGES = [
    "docs/influence.md",
    "docs/benchmarks.md",
    "docs/transforms.md",
    "docs/shap.md",
    "docs/attributions.md",
    "docs/reliability.md",
]
# Pages whose python blocks are fragments, not runnable on their own.
FRAGMENTS = {"docs/models-and-losses.md": "output_fn needs a model that returns a dict"}


def _python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), flags=re.S)


@pytest.fixture(scope="module")
def quickstart() -> dict:
    blocks = _python_blocks("README.md")
    assert blocks, "the README has no python block"
    namespace: dict = {}  # blocks build on each other, as a reader runs them in order
    for code in blocks:
        exec(compile(code, "README.md", "exec"), namespace)
    return namespace


def test_readme_quickstart_runs(quickstart):
    assert quickstart["scores"].shape == (6, 3, 300)
    assert quickstart["top"].indices.shape == (6, 3, 5)


@pytest.mark.parametrize("page", PAGES)
def test_docs_code_runs(quickstart, page):
    blocks = _python_blocks(page)
    assert blocks, f"{page} has no python block"
    namespace = dict(quickstart)
    for code in blocks:
        exec(compile(code, page, "exec"), namespace)


def test_every_page_with_python_code_is_run():
    pages = {str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md") if _python_blocks(p)}
    assert pages <= set(PAGES) | set(FRAGMENTS), "add the page to PAGES in this file"


def _relative_links(page: Path) -> list[str]:
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text())
    return [link for link in links if "://" not in link]


@pytest.mark.parametrize(
    "page", ["README.md", "CONTRIBUTING.md"] + sorted(p.name for p in (ROOT / "docs").glob("*.md"))
)
def test_relative_links_resolve(page):
    path = ROOT / page if (ROOT / page).exists() else ROOT / "docs" / page
    missing = [link for link in _relative_links(path) if not (path.parent / link).exists()]
    assert not missing, f"{page} links to missing files: {missing}"


def test_readme_links_every_docs_page():
    linked = set(_relative_links(ROOT / "README.md"))
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages <= linked, f"not linked from the README: {sorted(pages - linked)}"


def _test_file(name: str) -> Path:
    if "/" in name:
        return ROOT / name
    if (ROOT / "tests/influence" / name).exists():  # the table's default folder
        return ROOT / "tests/influence" / name
    found = sorted((ROOT / "tests").rglob(name))
    assert len(found) == 1, f"{name}: {len(found)} test files of that name"
    return found[0]


def _bad_input_rows() -> list[tuple[str, str]]:
    text = (ROOT / "docs/reliability.md").read_text().split("## Bad input", 1)[1]
    rows = re.findall(r"^\| (.+?) \| (.+) \|$", text, flags=re.M)
    return [(case, result) for case, result in rows if case not in ("input", "---")]


@pytest.mark.parametrize("case,result", _bad_input_rows(), ids=lambda s: s[:40])
def test_each_bad_input_row_names_an_existing_test(case, result):
    refs = re.findall(r"`((?:tests/)?[\w/]*test_\w+\.py)(?:::(\w+))?`", result)
    files = [(_test_file(name), function) for name, function in refs] or [
        (ROOT / "tests/influence/test_bad_input.py", "")
    ]
    exception = re.match(r"`(\w+(?:Error|Exception))`", result)
    sources = []
    for path, function in files:
        assert path.is_file(), f"{case}: {path} does not exist"
        source = path.read_text()
        assert not function or f"def {function}(" in source, f"{case}: no {function} in {path}"
        sources.append(source)
    if exception:
        assert any(exception[1] in s for s in sources), f"{case}: no test expects {exception[1]}"
