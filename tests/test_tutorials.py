"""Every tutorial in `tutorials/` runs as a notebook, top to bottom, in its small-data mode.

Each `tutorials/NN_name.py` (a jupytext "py:percent" notebook) is converted with jupytext
and executed by nbclient on an IPython kernel of the running Python, in a temporary working
directory, with `CAPTUM_LAYERINF_TUTORIAL_SMALL=1` (the tutorial shrinks its sizes, same
code path) and `MPLBACKEND=Agg`. A notebook that raises fails the test with the cell that
raised; one that runs past `NOTEBOOK_LIMIT_S` seconds in total is stopped and fails.

Run times are printed as each notebook finishes and kept in pytest's cache
(`pytest --cache-show 'tutorials/*'`), so a run of `make test` reports them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import jupytext
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.py"))
NOTEBOOK_LIMIT_S = 240  # the budget is 120 s each; twice that absorbs a busy machine
SMALL = "CAPTUM_LAYERINF_TUTORIAL_SMALL"


def kernel_env() -> dict[str, str]:
    """The kernel's environment: ours, small mode, no display, this checkout importable."""
    env = dict(os.environ)
    env[SMALL] = "1"
    env["MPLBACKEND"] = "Agg"
    # One intra-op thread unless told otherwise: on a busy 2-core machine, OpenMP threads
    # spin-waiting on each other make small convolutions far slower (tests/transforms).
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    path = [str(ROOT), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    env["PYTHONPATH"] = os.pathsep.join(path)
    return env


def _line_of(cell_source: str, text: str) -> int | None:
    """1-based line of the .py file where a cell's first non-empty line stands."""
    first = next((line for line in cell_source.splitlines() if line.strip()), None)
    if first is None:
        return None
    for number, line in enumerate(text.splitlines(), start=1):
        if line == first:
            return number
    return None


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _describe_failure(path: Path, nb, index: int, detail: str) -> str:
    cell = nb.cells[index]
    line = _line_of(cell.source, path.read_text())
    where = f"{_shown(path)}:{line}" if line else _shown(path)
    code_index = sum(1 for c in nb.cells[: index + 1] if c.cell_type == "code")
    return (
        f"tutorial {path.name} failed in code cell {code_index} (cell {index + 1} of "
        f"{len(nb.cells)}), starting at {where}:\n\n{cell.source}\n\n{detail}"
    )


class TutorialFailed(Exception):
    """A notebook raised, ran out of time or lost its kernel; the message names the cell."""


def run_notebook(path: Path, cwd: Path, limit_s: float = NOTEBOOK_LIMIT_S) -> float:
    """Executes a jupytext notebook top to bottom; returns its run time in seconds.

    Raises:
        TutorialFailed: naming the cell that raised or was running when time ran out.
    """
    nb = jupytext.read(path)
    deadline = time.monotonic() + limit_s
    running: dict[str, int] = {}
    client = NotebookClient(
        nb,
        kernel_name="python3",  # ipykernel's spec; "python" there means sys.executable
        timeout_func=lambda cell: max(1, int(deadline - time.monotonic())),
        resources={"metadata": {"path": str(cwd)}},  # the kernel's working directory
        on_cell_execute=lambda cell, cell_index: running.update(index=cell_index),
    )
    start = time.perf_counter()
    try:
        client.execute(env=kernel_env())
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as err:
        elapsed = time.perf_counter() - start
        if isinstance(err, CellExecutionError):
            detail = f"{err.ename}: {err.evalue}\n\n{_strip_ansi(err.traceback)}"
        elif isinstance(err, CellTimeoutError):
            detail = f"the notebook ran past its limit of {limit_s:g} s ({elapsed:.0f} s)."
        else:
            detail = f"the kernel died after {elapsed:.0f} s: {err}"
        if "index" not in running:
            message = f"tutorial {path.name} failed before its first cell: {detail}"
            raise TutorialFailed(message) from None
        raise TutorialFailed(_describe_failure(path, nb, running["index"], detail)) from None
    return time.perf_counter() - start


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_tutorial_runs(path: Path, tmp_path: Path, capsys, request) -> None:
    try:
        elapsed = run_notebook(path, tmp_path)
    except TutorialFailed as failure:
        pytest.fail(str(failure), pytrace=False)
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    if cache is not None:
        times = cache.get("tutorials/runtimes", {})
        times[path.name] = round(elapsed, 1)
        cache.set("tutorials/runtimes", times)
    with capsys.disabled():
        print(f"\n  {path.name}: {elapsed:.1f} s", end=" ")


HEADER = """# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---
"""


@pytest.mark.slow
def test_harness_names_the_failing_cell_and_passes_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "99_broken.py"
    path.write_text(
        HEADER + "\n# %% [markdown]\n# # Broken\n\n# %%\nimport os\n"
        f"assert os.environ['{SMALL}'] == '1'\n"
        "import matplotlib\nassert matplotlib.get_backend().lower() == 'agg'\n"
        "import captum_layerinf\n\n# %%\nvalue = 1 / 0\n"
    )
    with pytest.raises(TutorialFailed) as failure:
        run_notebook(path, tmp_path)
    message = str(failure.value)
    assert "code cell 2 (cell 3 of 3)" in message
    line = path.read_text().splitlines().index("value = 1 / 0") + 1
    assert f"{path}:{line}:" in message and "ZeroDivisionError" in message


def test_harness_stops_a_notebook_past_its_limit(tmp_path: Path) -> None:
    path = tmp_path / "98_slow.py"
    path.write_text(HEADER + "\n# %%\nimport time\n\n# %%\ntime.sleep(60)\n")
    start = time.monotonic()
    with pytest.raises(TutorialFailed, match="ran past its limit of 3 s") as failure:
        run_notebook(path, tmp_path, limit_s=3)
    assert "code cell 2" in str(failure.value) and "time.sleep(60)" in str(failure.value)
    assert time.monotonic() - start < 50


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_tutorials_exist() -> None:
    assert NOTEBOOKS, f"no tutorials found in {TUTORIALS}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_tutorial_follows_the_convention(path: Path) -> None:
    assert re.fullmatch(r"\d\d_[a-z0-9_]+\.py", path.name), (
        f"{path.name}: tutorials are named NN_lowercase_name.py"
    )
    nb = jupytext.read(path)
    fmt = nb.metadata.get("jupytext", {}).get("text_representation", {})
    assert fmt.get("format_name") == "percent", (
        f"{path.name} is not a py:percent notebook: add the jupytext header "
        "(jupytext --set-formats py:percent)"
    )
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), (
        f"{path.name} must open with a markdown cell holding its '# Title'"
    )
    assert SMALL in path.read_text(), (
        f"{path.name} must read {SMALL} to shrink its sizes under the test run"
    )
    assert not any(c.get("outputs") for c in nb.cells)


def test_no_notebook_with_outputs_is_committed() -> None:
    """Tutorials are committed as .py sources only; .ipynb files are local conversions."""
    if shutil.which("git") and (ROOT / ".git").exists():
        listed = subprocess.run(
            ["git", "ls-files", "--", "tutorials/*.ipynb", "tutorials/**/*.ipynb"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        committed = [ROOT / name for name in listed]
    else:  # an exported tree without git: every notebook there would be shipped
        committed = sorted(TUTORIALS.rglob("*.ipynb"))
    assert not committed, (
        f"notebooks are committed in tutorials/: {[str(p.relative_to(ROOT)) for p in committed]}."
        " Keep the jupytext .py source only (jupytext --to py:percent NAME.ipynb), "
        "and `git rm --cached` the .ipynb."
    )
