"""The fixed and adaptive KL coefficient (Ziegler et al. 2019)."""

import pytest

from ppo_core.kl_control import AdaptiveKLController, FixedKLController, make_kl_controller


def test_fixed_never_moves():
    c = FixedKLController(0.1)
    for kl in (0.0, 1.0, 100.0):
        assert c.update(kl, 256) == 0.1


def test_adaptive_follows_the_proportional_rule():
    c = AdaptiveKLController(beta=0.2, target=6.0, horizon=10_000)
    # KL at 1.5 × target: error 0.5 clipped to 0.2; β ← β(1 + 0.2·n/horizon)
    assert c.update(9.0, 1000) == pytest.approx(0.2 * (1 + 0.2 * 0.1))
    # KL at 0.9 × target: error −0.1, not clipped
    b = c.beta
    assert c.update(5.4, 1000) == pytest.approx(b * (1 - 0.1 * 0.1))


def test_adaptive_error_is_clipped_both_ways():
    hi, lo = AdaptiveKLController(1.0, 1.0, 100), AdaptiveKLController(1.0, 1.0, 100)
    assert hi.update(1e6, 100) == pytest.approx(1.2)
    assert lo.update(0.0, 100) == pytest.approx(0.8)


def test_adaptive_converges_towards_target_on_a_toy_system():
    # toy plant: observed KL is inversely proportional to β
    c = AdaptiveKLController(beta=0.01, target=0.5, horizon=200)
    for _ in range(300):
        c.update(0.05 / c.beta, 100)
    assert 0.05 / c.beta == pytest.approx(0.5, rel=0.05)


def test_make_kl_controller():
    assert isinstance(make_kl_controller(0.1), FixedKLController)
    assert isinstance(make_kl_controller(0.1, kl_target=0.02), AdaptiveKLController)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_bad_beta_raises(bad):
    with pytest.raises(ValueError, match="beta"):
        FixedKLController(bad)


def test_bad_observed_kl_raises():
    with pytest.raises(ValueError, match="observed_kl"):
        AdaptiveKLController(0.1, 1.0).update(float("nan"), 10)
