"""The paper's disturbance study, end to end: `DisturbanceStudy(StudyConfig(), out_dir).run()`."""

from .config import StudyConfig, tiny_config
from .study import STAGES, DisturbanceStudy, StudyResult

__all__ = ["STAGES", "DisturbanceStudy", "StudyConfig", "StudyResult", "tiny_config"]
