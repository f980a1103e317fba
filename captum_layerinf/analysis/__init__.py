"""The disturbance study's analyses on plain tensors: tables, I_avg, clustering, figures.

Every function works on its own on any score tensor (last dimension = training examples),
so the analyses can be rerun on scores from another tool.
"""

from .classification import (
    accuracy_table,
    cue_conflict_table,
    sem,
    texture_patch_table,
    true_class_in_top_k,
)
from .clustering import (
    class_profiles,
    cluster_profiles,
    clusters,
    correlation_distance,
    group_profiles,
    leaf_order,
    merge_sets,
)
from .influence import (
    class_average,
    group_mean,
    intra_class_table,
    intra_class_top,
    intra_inter,
    top_class,
    top_class_table,
    within_class_variance_ratio,
)
from .table import Table

__all__ = [
    "Table",
    "accuracy_table",
    "class_average",
    "class_profiles",
    "cluster_profiles",
    "clusters",
    "correlation_distance",
    "cue_conflict_table",
    "group_mean",
    "group_profiles",
    "intra_class_table",
    "intra_class_top",
    "intra_inter",
    "leaf_order",
    "merge_sets",
    "sem",
    "texture_patch_table",
    "top_class",
    "top_class_table",
    "true_class_in_top_k",
    "within_class_variance_ratio",
]
