import numpy as np
import pytest

from zeropoint.drift.stats import choose_test, dataset_drift, feature_drift, psi, psi_level


def test_test_selection_follows_evidently_defaults():
    rng = np.random.default_rng(0)
    assert choose_test(rng.normal(size=500), "numeric") == "ks"
    assert choose_test(rng.normal(size=5000), "numeric") == "wasserstein_norm"
    assert choose_test(rng.integers(0, 3, 500), "numeric") == "chisquare"     # <= 5 distinct values: categorical
    assert choose_test(rng.integers(0, 2, 500), "numeric") == "z"
    assert choose_test(rng.integers(0, 4, 5000), "categorical") == "jensen_shannon"


@pytest.mark.parametrize("n", [300, 3000])
def test_same_distribution_is_quiet_and_a_shift_is_flagged(n):
    rng = np.random.default_rng(1)
    ref = rng.normal(0, 1, n)
    same = feature_drift("x", ref, rng.normal(0, 1, n))
    moved = feature_drift("x", ref, rng.normal(0.5, 1, n))
    assert same.test == ("ks" if n <= 1000 else "wasserstein_norm")
    assert not same.drifted and moved.drifted
    assert moved.psi > same.psi and moved.psi_level in ("moderate", "significant")


def test_psi_levels_and_dataset_share():
    assert psi_level(0.05) == "none" and psi_level(0.1) == "moderate" and psi_level(0.3) == "significant"
    rng = np.random.default_rng(2)
    a = rng.normal(0, 1, 5000)
    assert psi(a, a) == pytest.approx(0.0)
    rs = [feature_drift(f"f{i}", a, a + (1.0 if i < 2 else 0.0)) for i in range(4)]
    s = dataset_drift(rs)
    assert s["n_drifted"] == 2 and s["share_drifted"] == 0.5 and s["dataset_drift"]   # >= 0.5 share, as Evidently
    assert not dataset_drift(rs[1:])["dataset_drift"]
