"""The paper's disturbance study, end to end: `DisturbanceStudy(StudyConfig(), out_dir).run()`."""

from ._stages import STAGES
from .config import ConfigError, StudyConfig, tiny_config
from .study import DisturbanceStudy, StudyResult

__all__ = ["STAGES", "ConfigError", "DisturbanceStudy", "StudyConfig", "StudyResult", "tiny_config"]
