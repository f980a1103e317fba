"""The demo command runs end to end (on a reduced workload: the same code path)."""

import subprocess
import sys

from captum_layerinf.cli import main


def test_demo_prints_top_example_per_layer_and_compound_top_k(capsys):
    assert (
        main(
            [
                "digits",
                "--n-train",
                "200",
                "--n-images",
                "2",
                "--epochs",
                "3",
                "--top",
                "3",
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "test accuracy" in out
    for layer in (
        "features.0",
        "features.2",
        "features.5",
        "features.7",
        "classifier.0",
        "classifier.2",
    ):
        assert out.count(f"  {layer} ") == 2
    assert out.count("compound top-3: #") == 2


def test_module_entry_point_shows_help():
    result = subprocess.run(
        [sys.executable, "-m", "captum_layerinf", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "demo" in result.stdout
