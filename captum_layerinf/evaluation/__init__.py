"""Does an influence estimate predict retraining? Leave-one-out, LDS, layer aggregation.

from captum_layerinf.evaluation import (
    LBFGSRetrain, leave_one_out, subset_retraining, loo_correlations,
    linear_datamodeling_score, aggregate_layers,
)
"""

from .aggregation import AGGREGATIONS, aggregate_layers
from .leave_one_out import (
    Fidelity,
    RetrainingEffects,
    leave_one_out,
    linear_datamodeling_score,
    loo_correlations,
    random_subsets,
    retraining_effects,
    subset_retraining,
)
from .retraining import LBFGSRetrain, Retrain

__all__ = [
    "AGGREGATIONS",
    "Fidelity",
    "LBFGSRetrain",
    "Retrain",
    "RetrainingEffects",
    "aggregate_layers",
    "leave_one_out",
    "linear_datamodeling_score",
    "loo_correlations",
    "random_subsets",
    "retraining_effects",
    "subset_retraining",
]
