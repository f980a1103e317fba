"""Clustering and correlation distance on profiles with a known structure."""

import torch

from captum_layerinf import analysis as A


def test_two_well_separated_groups_form_two_clusters():
    profiles = torch.tensor([[0.0, 0.0], [0.1, 0.0], [10.0, 10.0], [10.0, 10.2]])
    z = A.cluster_profiles(profiles)
    ids = A.clusters(z, 2)
    assert ids[0] == ids[1] != ids[2] == ids[3]
    # average linkage: the last merge is the mean of the 4 cross distances
    cross = torch.cdist(profiles[:2].double(), profiles[2:].double()).mean()
    assert abs(z[-1, 2] - float(cross)) < 1e-12


def test_correlation_distance_is_one_minus_pearson():
    profiles = torch.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 6.5], [3.0, 2.0, 1.0]])
    d = A.correlation_distance(profiles)
    r = torch.corrcoef(profiles.double())
    assert torch.allclose(d, (1 - r).clamp(0, 2))
    assert abs(float(d[0, 2]) - 2.0) < 1e-12 and abs(float(d[0, 0])) < 1e-12


def test_group_profiles_average_each_class_and_variant():
    per_layer = torch.tensor([[1.0, 3.0, 5.0, 7.0], [0.0, 2.0, 4.0, 6.0]])
    labels = torch.tensor([0, 0, 1, 1])
    variants = torch.tensor([0, 0, 0, 1])
    profiles, names = A.group_profiles(per_layer, labels, variants, ["a", "b"], ["o", "w"])
    assert names == ["a | o", "b | o", "b | w"]
    assert torch.equal(profiles, torch.tensor([[2.0, 1.0], [5.0, 4.0], [7.0, 6.0]]))
