"""The paper's disturbance study, end to end, with every stage cached on disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ._cache import StageCache
from ._inputs import check_inputs
from ._results import StudyResults
from ._sections import analyse
from ._stages import STAGE_REGISTRY, Stage, StudyRun, stage_keys
from .config import StudyConfig


@dataclass(frozen=True)
class StudyResult:
    """Where a finished study's results are.

    Attributes:
        out_dir: The run's folder (config.json, stages/, tables/, figures/, report.html).
        report: Path of the HTML report.
        findings: One-line findings, as in the report's summary.
        computed: Stages computed in this run (the others were read from disk).
    """

    out_dir: Path
    report: Path
    findings: list[str]
    computed: list[str]


class DisturbanceStudy:
    """Which cue decides, object, texture or style, and which layers and training images carry it.

    The study of Aamir et al. (2023) on any classifier: test images are shown in every
    registered variant (the paper's four: original, white background, and textured and
    styled images built on the white-background ones); for each, the model's predictions,
    layer-wise, compound and global influence of every training image, and SHAP maps; then
    the paper's tables and figures and an HTML report. The stages are those of `STAGES`,
    in order; each is saved in `out_dir/stages/` as it finishes, so an interrupted run
    resumes where it stopped.

    Args:
        config: What to run (a `StudyConfig`, saved as `out_dir/config.json`).
        out_dir: Folder of the results.

    Examples:
        >>> result = DisturbanceStudy(StudyConfig(), "runs/study").run()
        >>> print(result.report)
    """

    def __init__(self, config: StudyConfig | None = None, out_dir: str | Path = "runs/study"):
        self.config = config or StudyConfig()
        self.out_dir = Path(out_dir)

    def run(self) -> StudyResult:
        """Runs (or resumes) every stage, the analyses and the report.

        Torch runs on `config.num_threads` threads meanwhile (restored after), so that
        floating-point sums, and with them training and every finding, do not depend on
        the machine's core count.
        """
        check_inputs(self.config)
        threads = torch.get_num_threads()
        torch.set_num_threads(self.config.num_threads)
        try:
            return self._run()
        finally:
            torch.set_num_threads(threads)

    def _run(self) -> StudyResult:
        cfg = self.config
        cache = StageCache(self.out_dir, cfg)
        keys = stage_keys(cfg)
        run = StudyRun(cfg, self.out_dir)
        bar = tqdm(STAGE_REGISTRY, desc="study", disable=not cfg.show_progress)
        fields: dict[str, Any] = {}
        for stage in bar:
            bar.set_postfix_str(stage.name)

            def compute(stage: Stage = stage) -> dict:
                return stage.compute(run).to_dict()

            stored = cache.stage(stage.name, compute, keys[stage.name])
            run.results[stage.name] = stage.result.from_dict(stored, cache.path(stage.name))
            fields[stage.field] = run.results[stage.name]
        bar.close()
        from ..report import write_report

        findings = analyse(cfg, StudyResults(**fields), self.out_dir)
        report = write_report(self.out_dir)
        return StudyResult(self.out_dir, report, findings, cache.ran)
