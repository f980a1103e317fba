"""The demo command runs end to end (on a reduced workload: the same code path)."""

import subprocess
import sys

import pytest

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


def test_help_names_every_command(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert all(command in out for command in ("demo", "run", "report", "config", "digits"))


@pytest.mark.slow  # a fresh interpreter imports the whole package
def test_module_entry_point_shows_help():
    result = subprocess.run(
        [sys.executable, "-m", "captum_layerinf", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "demo" in result.stdout


BAD_CONFIGS = [
    ('{"epochs": -1}', "'epochs'", "at least 1"),
    ('{"lr": "fast"}', "'lr'", "must be a number"),
    ('{"n_test_per_class": 2.5}', "'n_test_per_class'", "must be an integer"),
    ('{"shap_explainer": "kernel"}', "'shap_explainer'", "one of"),
    ('{"hessian": "magic"}', "'hessian'", "one of"),
    ('{"global_hessian": "ekfac"}', "'global_hessian'", "repeat the compound"),
    ('{"texture_strength": 2}', "'texture_strength'", "[0, 1]"),
    ('{"sweep_steps": []}', "'sweep_steps'", "non-empty list"),
    ('{"n_train": 3}', "'n_train'", "valid keys"),
    ("", "empty", "captum-layerinf config"),
    ("[1, 2]", "JSON object", "not a list"),
    ('{"epochs": 3', "not valid JSON", "fix the syntax"),
    ('{"data": "imagefolder", "data_path": "nowhere"}', "'data_path'", "not found"),
    ('{"model": "resnet18", "weights": "none.pt"}', "'weights'", "state_dict"),
    ('{"model": "no_such_pkg:make", "weights": "CONFIG"}', "'model'", "PYTHONPATH"),
    ('{"style": "no_such_style"}', "'style'", "offline image"),
]


@pytest.mark.parametrize(("text", "key", "fix"), BAD_CONFIGS)
def test_bad_configuration_is_one_line_naming_file_key_and_fix(tmp_path, capsys, text, key, fix):
    path = tmp_path / "cfg.json"
    path.write_text(text.replace("CONFIG", str(path)))
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("captum-layerinf: error: ")
    assert str(path) in err and key in err and fix in err
    assert not (tmp_path / "run").exists()  # refused before any work


def test_missing_configuration_and_report_of_no_study_exit_2(tmp_path, capsys):
    assert main(["run", str(tmp_path / "none.json")]) == 2
    assert "none.json: no such file" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "sections.json" in err and "captum-layerinf run" in err
