"""The whole disturbance study on a tiny configuration: stages, cache, tables, report, CLI."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from captum_layerinf import ExactSettings, LayerInfluence
from captum_layerinf.analysis import Table
from captum_layerinf.cli import main
from captum_layerinf.experiments import STAGES, DisturbanceStudy, StudyConfig, tiny_config
from captum_layerinf.experiments._results import (
    Data,
    GlobalInfluence,
    Influence,
    ModelState,
    Predictions,
    StudyResults,
    Variants,
)
from captum_layerinf.experiments._sections import SECTIONS as SECTION_REGISTRY
from captum_layerinf.experiments._sections import analyse
from captum_layerinf.experiments._stages import STAGE_REGISTRY, StudyRun
from captum_layerinf.experiments._variants import VARIANTS

SECTIONS = (
    "summary", "method", "table1", "table3", "table2", "gallery", "ranges", "interclass",
    "clustering", "layers", "sweep", "shap", "additions",
)  # fmt: skip


# The tests that read the tiny study's output share one run of it (about 25 s): slow.
needs_study = pytest.mark.slow


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    """The tiny study run once through the CLI (`captum-layerinf run CONFIG.json`)."""
    folder = tmp_path_factory.mktemp("study")
    config = folder / "tiny.json"
    tiny_config().save(config)
    assert main(["run", str(config), "--out", str(folder / "run"), "--no-progress"]) == 0
    return folder / "run"


def _stage(folder, name):
    return torch.load(folder / "stages" / f"{name}.pt", weights_only=True)


@needs_study
def test_report_has_every_section_with_its_figures(study_dir, capsys):
    html = (study_dir / "report.html").read_text()
    for key in SECTIONS:
        assert f'id="{key}"' in html, key
    sections = json.loads((study_dir / "sections.json").read_text())
    assert [s["key"] for s in sections] == list(SECTIONS)
    figures = [f for s in sections for f in s["figures"]]
    assert html.count("data:image/png;base64,") == len(figures) >= 10
    assert all((study_dir / f).stat().st_size > 1000 for f in figures)
    assert "Top-1 accuracy" in html
    verdicts = [f for f in sections[0]["findings"] if "reproduce" in f]
    assert len(verdicts) == 8 and all(("reproduces" in f) != ("does not" in f) for f in verdicts)
    method = " ".join(sections[1]["findings"])
    assert "Eq. 5 with the Gauss-Newton matrix" in method and "hessian='exact'" in method
    assert "Gauss-Newton" in html
    assert main(["report", str(study_dir)]) == 0
    assert "report.html" in capsys.readouterr().out


@needs_study
def test_stored_scores_equal_layer_influence_called_directly(study_dir):
    cfg = StudyConfig.load(study_dir / "config.json")
    data, variants = _stage(study_dir, "data"), _stage(study_dir, "variants")
    assert len(variants["labels"]) == len(VARIANTS) * len(data["test_labels"])
    run = StudyRun(cfg, study_dir)
    run.results.update(
        data=Data.from_dict(data), model=ModelState.from_dict(_stage(study_dir, "model"))
    )
    model = run.model()
    train = torch.utils.data.TensorDataset(data["train_images"], data["train_labels"])
    batch = (variants["images"][:6], variants["labels"][:6])
    direct = LayerInfluence(model, train, damping=cfg.damping).influence(batch)
    stored = _stage(study_dir, "influence")["scores"][:, :6]
    assert torch.allclose(stored, direct, rtol=1e-4, atol=1e-6 * direct.abs().max())
    gn = LayerInfluence(model, train, hessian=ExactSettings(gauss_newton="always"))
    glob = gn.global_influence(batch)
    assert torch.allclose(_stage(study_dir, "global")["scores"][:6], glob, rtol=1e-4, atol=1e-6)
    assert "Gauss-Newton" in _stage(study_dir, "global")["method"]


@needs_study
def test_accuracy_table_agrees_with_the_stored_predictions(study_dir):
    probs = _stage(study_dir, "predictions")["probs"]
    variants = _stage(study_dir, "variants")
    table = json.loads((study_dir / "tables" / "table1_accuracy.json").read_text())
    rows = {r[1]: r for r in table["rows"] if r[0] == "all classes"}
    for v, name in enumerate(VARIANTS):
        sel = variants["variants"] == v
        acc = (probs[sel].argmax(1) == variants["labels"][sel]).double().mean()
        assert rows[name][5] == pytest.approx(float(acc))


@needs_study
def test_textured_variant_carries_the_next_class_texture_on_white(study_dir):
    v = _stage(study_dir, "variants")
    n_classes = len(_stage(study_dir, "data")["class_names"])
    textured = v["variants"] == VARIANTS.index("textured")
    assert torch.equal(v["texture_labels"][textured], (v["labels"][textured] + 1) % n_classes)
    white = v["variants"] == VARIANTS.index("white background")
    background = ~v["masks"][white]
    assert (v["images"][white].permute(1, 0, 2, 3)[:, background] == 1).all()
    assert (v["images"][textured].permute(1, 0, 2, 3)[:, ~v["masks"][textured]] == 1).all()


@needs_study
def test_rerun_reads_every_stage_and_recomputes_only_missing_ones(study_dir, capsys):
    before = _stage(study_dir, "influence")["scores"]
    (study_dir / "stages" / "sweep.pt").unlink()
    # a variants stage stored before the variants' names were recorded still resumes
    variants = _stage(study_dir, "variants")
    assert variants.pop("names") == list(VARIANTS)
    torch.save(variants, study_dir / "stages" / "variants.pt")
    result = DisturbanceStudy(tiny_config(), study_dir).run()
    assert result.computed == ["sweep"]
    assert torch.equal(_stage(study_dir, "influence")["scores"], before)
    assert set(json.loads((study_dir / "stages" / "seconds.json").read_text())) == set(STAGES)


@needs_study
def test_another_configuration_in_the_same_folder_is_refused(study_dir):
    with pytest.raises(ValueError, match=re.escape("differs in ['damping']")):
        DisturbanceStudy(tiny_config(damping=0.5), study_dir).run()


def test_config_json_round_trip_and_clear_errors(tmp_path):
    cfg = tiny_config(seed=3)
    cfg.save(tmp_path / "c.json")
    assert StudyConfig.load(tmp_path / "c.json") == cfg
    (tmp_path / "bad.json").write_text(json.dumps({"n_train": 3}))
    with pytest.raises(ValueError, match="unknown key 'n_train'"):
        StudyConfig.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="needs data_path"):
        StudyConfig(data="cifar10")
    with pytest.raises(ValueError, match="local state-dict path"):
        StudyConfig(model="resnet18")


def _image_folder(root, rng):
    for split, n in (("train", 6), ("test", 1)):
        for cls in (MATH_NAME, "b"):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.full((40, 40, 3), 230, dtype=np.uint8)
                colour = (200, 30, 30) if cls == "b" else (30, 30, 200)
                pixels[8:32, 8:32] = colour + rng.integers(0, 20, (24, 24, 3))
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / cls / f"{i}.png")


MATH_NAME = r"$\badcmd{x}$"  # mathtext that matplotlib cannot parse
FACTORY = """
from captum_layerinf.models import ShapesCNN

def make(num_classes):
    return ShapesCNN(width=4, n_classes=num_classes)
"""


@pytest.mark.slow
def test_own_module_and_image_folder_and_new_data_at_the_same_path(tmp_path, monkeypatch):
    """A factory `module:function` with a state dict; data changed in place recomputes."""
    from captum_layerinf.models import ShapesCNN

    (tmp_path / "my_factory.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    torch.save(ShapesCNN(width=4, n_classes=2).state_dict(), tmp_path / "w.pt")
    _image_folder(tmp_path / "data", np.random.default_rng(0))
    cfg = tiny_config(
        data="imagefolder",
        data_path=str(tmp_path / "data"),
        size=16,
        model="my_factory:make",
        weights=str(tmp_path / "w.pt"),
        shap_images=1,
    )
    first = DisturbanceStudy(cfg, tmp_path / "run").run()
    data = _stage(tmp_path / "run", "data")
    assert data["class_names"] == [MATH_NAME, "b"] and data["test_masks"].shape == (2, 16, 16)
    assert first.computed == list(STAGES) and first.report.is_file()
    before = _stage(tmp_path / "run", "influence")["scores"]
    # new images at the same path: every stage depends on the data and is recomputed
    _image_folder(tmp_path / "data", np.random.default_rng(1))
    second = DisturbanceStudy(cfg, tmp_path / "run").run()
    assert second.computed == list(STAGES)
    assert not torch.equal(_stage(tmp_path / "run", "influence")["scores"], before)
    assert MATH_NAME in (tmp_path / "run" / "report.html").read_text()


def test_stage_keys_follow_the_content_of_data_and_weights(tmp_path):
    from captum_layerinf.experiments._stages import stage_keys

    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "train" / "x.png").write_bytes(b"1")
    (tmp_path / "w.pt").write_bytes(b"1")
    cfg = tiny_config(
        data="imagefolder", data_path=str(tmp_path / "data"), weights=str(tmp_path / "w.pt")
    )
    keys = stage_keys(cfg)
    (tmp_path / "w.pt").write_bytes(b"2")
    new_weights = stage_keys(cfg)
    assert new_weights["data"] == keys["data"]
    assert all(new_weights[s] != keys[s] for s in STAGES[1:])
    (tmp_path / "data" / "train" / "x.png").write_bytes(b"2")
    assert all(stage_keys(cfg)[s] != new_weights[s] for s in STAGES)


def test_stage_cache_recomputes_a_stage_whose_key_changed(tmp_path):
    from captum_layerinf.experiments._cache import StageCache

    cache = StageCache(tmp_path, tiny_config())
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.tensor([len(calls)])}

    assert cache.stage("a", compute, "k1")["x"].item() == 1
    assert cache.stage("a", compute, "k1")["x"].item() == 1
    assert cache.stage("a", compute, "k2")["x"].item() == 2
    assert cache.ran == ["a", "a"] and set(cache.seconds()) == {"a"}
    assert not list(tmp_path.glob("**/*.tmp"))


def test_run_fixes_the_thread_count_and_restores_it(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(DisturbanceStudy, "_run", lambda self: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    DisturbanceStudy(tiny_config(num_threads=before + 2), tmp_path).run()
    assert seen == [before + 2] and torch.get_num_threads() == before


@needs_study
def test_the_analysis_follows_the_variants_of_the_run(study_dir, tmp_path, monkeypatch):
    """A fifth variant (the styled images again, under another name) reaches every table.

    The SHAP and sweep sections, which draw the stored explanations and sweeps whatever
    the variants, are left out to keep the test short.
    """
    from captum_layerinf.experiments import _sections

    kept = tuple(s for s in SECTION_REGISTRY if s.key not in ("shap", "sweep"))
    monkeypatch.setattr(_sections, "SECTIONS", kept)
    cfg = StudyConfig.load(study_dir / "config.json")
    r = {s.name: s.result.from_dict(_stage(study_dir, s.name)) for s in STAGE_REGISTRY}
    v, extra = r["variants"], r["variants"].variants == VARIANTS.index("styled")
    variants = Variants(
        images=torch.cat([v.images, v.images[extra]]),
        labels=torch.cat([v.labels, v.labels[extra]]),
        variants=torch.cat([v.variants, torch.full((int(extra.sum()),), len(VARIANTS))]),
        texture_labels=torch.cat([v.texture_labels, v.texture_labels[extra]]),
        masks=torch.cat([v.masks, v.masks[extra]]),
        names=[*VARIANTS, "styled again"],
    )
    p, i, g = r["predictions"], r["influence"], r["global"]
    results = StudyResults(
        data=r["data"],
        model=r["model"],
        variants=variants,
        predictions=Predictions(torch.cat([p.probs, p.probs[extra]]), p.texture_probs),
        influence=Influence(torch.cat([i.scores, i.scores[:, extra]], 1), i.layer_names),
        global_influence=GlobalInfluence(torch.cat([g.scores, g.scores[extra]]), g.method),
        shap=r["shap"],
        sweep=r["sweep"],
    )
    found = analyse(cfg, results, tmp_path)
    table = {t: Table.load(tmp_path / "tables" / f"{t}.json") for t in ("table1_accuracy", "iavg")}
    overall = {
        row["variant"]: row
        for row in table["table1_accuracy"].records()
        if row["class"] == "all classes"
    }
    assert list(overall) == [*VARIANTS, "styled again"]
    assert {**overall["styled again"], "variant": "styled"} == overall["styled"]
    iavg = {row["variant"]: row for row in table["iavg"].records()}
    assert {**iavg["styled again"], "variant": "styled"} == iavg["styled"]
    assert "styled again" in found[0]
    before = json.loads((study_dir / "sections.json").read_text())[0]["findings"]
    assert found[1:5] == before[1:5]  # Tables 1 and 3 read the paper's variants by name
    written = json.loads((tmp_path / "sections.json").read_text())
    assert [s["key"] for s in written] == [s.key for s in kept]


def test_sections_are_one_registry_with_unique_keys_and_guides():
    assert [s.key for s in SECTION_REGISTRY] == list(SECTIONS)
    assert all(s.title and len(s.guide) > 40 and callable(s.write) for s in SECTION_REGISTRY)


def test_a_new_variant_recomputes_the_stages_from_variants_on(monkeypatch):
    from captum_layerinf.experiments import _stages
    from captum_layerinf.experiments._variants import VARIANT_REGISTRY, Variant, original

    cfg = tiny_config()
    before = _stages.stage_keys(cfg)
    registry = (*VARIANT_REGISTRY, Variant("again", original))
    monkeypatch.setattr(_stages, "VARIANTS", tuple(v.name for v in registry))
    after = _stages.stage_keys(cfg)
    kept = {s.name for s in _stages.STAGE_REGISTRY if not s.uses_variants}
    assert kept == {"data", "model"}
    assert all((after[s] == before[s]) == (s in kept) for s in STAGES)
