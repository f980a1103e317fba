"""The paper's disturbance study, end to end: `DisturbanceStudy(StudyConfig(), out_dir).run()`."""

from .config import ConfigError, StudyConfig, tiny_config
from .study import STAGES, DisturbanceStudy, StudyResult

__all__ = ["STAGES", "ConfigError", "DisturbanceStudy", "StudyConfig", "StudyResult", "tiny_config"]
