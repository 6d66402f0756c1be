"""GAE and returns against plain Python loops and the λ = 0 / λ = 1 identities."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ppo_core.advantages import discounted_returns, gae, whiten


def gae_loop(rewards, values, dones, last_value, gamma, lam, truncated=None, final_values=None):
    """The textbook recursion, one scalar at a time, written independently of ppo_core."""
    T, N = rewards.shape
    adv = np.zeros((T, N))
    for n in range(N):
        running = 0.0
        for t in reversed(range(T)):
            if dones[t, n]:
                next_value, cont = 0.0, 0.0
            elif truncated is not None and truncated[t, n]:
                next_value, cont = final_values[t, n], 0.0
            else:
                next_value = values[t + 1, n] if t + 1 < T else last_value[n]
                cont = 1.0
            delta = rewards[t, n] + gamma * next_value - values[t, n]
            running = delta + gamma * lam * cont * running
            adv[t, n] = running
    return adv, adv + values


def random_rollout(seed, T=17, N=4, p_done=0.15):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(T, N))
    values = rng.normal(size=(T, N))
    dones = (rng.random((T, N)) < p_done).astype(np.float64)
    truncated = ((rng.random((T, N)) < p_done) & (dones == 0)).astype(np.float64)
    final_values = rng.normal(size=(T, N))
    last_value = rng.normal(size=N)
    return rewards, values, dones, last_value, truncated, final_values


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 0.0), (1.0, 1.0), (0.5, 0.7)])
def test_gae_matches_loop(seed, gamma, lam):
    r, v, d, lv, tr, fv = random_rollout(seed)
    adv, ret = gae(r, v, d, lv, gamma, lam, truncated=tr, final_values=fv)
    adv_ref, ret_ref = gae_loop(r, v, d, lv, gamma, lam, tr, fv)
    np.testing.assert_allclose(adv.numpy(), adv_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret.numpy(), ret_ref, rtol=1e-5, atol=1e-5)


def test_lambda_one_is_monte_carlo_minus_values():
    r, v, d, lv, _, _ = random_rollout(7)
    adv, _ = gae(r, v, d, lv, 0.97, 1.0)
    mc = discounted_returns(r, d, 0.97, last_value=lv)
    np.testing.assert_allclose(adv.numpy(), mc.numpy() - v, rtol=1e-5, atol=1e-5)


def test_lambda_zero_is_td_error():
    r, v, d, lv, _, _ = random_rollout(8)
    adv, _ = gae(r, v, d, lv, 0.9, 0.0)
    next_v = np.concatenate([v[1:], lv[None]], 0) * (1 - d)
    np.testing.assert_allclose(adv.numpy(), r + 0.9 * next_v - v, rtol=1e-5, atol=1e-5)


def test_episode_end_stops_bootstrap():
    # one env, 3 steps, the episode terminates at t = 1; values are large so leaks show
    r = np.array([[1.0], [1.0], [1.0]])
    v = np.array([[0.0], [0.0], [100.0]])
    d = np.array([[0.0], [1.0], [0.0]])
    adv, _ = gae(r, v, d, np.array([100.0]), 1.0, 1.0)
    assert adv[1, 0].item() == pytest.approx(1.0)          # no V(s_2) = 100 leaks into t = 1
    assert adv[0, 0].item() == pytest.approx(2.0)


def test_truncation_keeps_bootstrap_but_not_the_next_episode():
    r = np.array([[1.0], [1.0], [1.0]])
    v = np.array([[0.0], [0.0], [100.0]])
    tr = np.array([[0.0], [1.0], [0.0]])
    fv = np.array([[0.0], [5.0], [0.0]])                    # V of the pre-reset state
    adv, _ = gae(r, v, np.zeros((3, 1)), np.array([0.0]), 1.0, 1.0, truncated=tr, final_values=fv)
    assert adv[1, 0].item() == pytest.approx(1.0 + 5.0)    # bootstraps V(final obs)
    assert adv[0, 0].item() == pytest.approx(1.0 + 6.0)    # and nothing from the next episode


def test_gae_single_env_and_tensor_inputs():
    r, v = torch.ones(4), torch.zeros(4)
    adv, ret = gae(r, v, torch.zeros(4), torch.tensor(0.0), 1.0, 1.0)
    assert adv.tolist() == [4.0, 3.0, 2.0, 1.0]
    assert ret.shape == (4,)


def test_truncation_without_final_values_is_refused():
    with pytest.raises(ValueError, match="final_values"):
        gae(np.ones((2, 1)), np.zeros((2, 1)), np.zeros((2, 1)), np.zeros(1), 0.9, 0.9,
            truncated=np.array([[1.0], [0.0]]))


def test_discounted_returns_simple():
    out = discounted_returns(np.ones((3, 1)), np.zeros((3, 1)), 0.5)
    assert out[:, 0].tolist() == pytest.approx([1.75, 1.5, 1.0])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=64))
def test_whiten_gives_zero_mean_unit_std(xs):
    x = torch.tensor(xs, dtype=torch.float64)
    if float(x.std()) < 1e-3:
        return
    w = whiten(x)
    assert abs(float(w.mean())) < 1e-6
    assert float(w.std()) == pytest.approx(1.0, rel=1e-4)
    kept = whiten(x, shift_mean=False)
    # shift_mean=False (TRL's convention for rewards): unit spread, the mean is kept
    assert float(kept.mean()) == pytest.approx(float(x.mean()), rel=1e-4, abs=1e-6)
    assert float(kept.std()) == pytest.approx(1.0, rel=1e-4)


# ------------------------------------------------------------------ group baselines (ch. 07)

from ppo_core.advantages import GROUP_STD_EPS, group_advantages, rloo_advantages  # noqa: E402


def test_group_advantages_hand_worked():
    # two prompts, G = 3: scores [1, 2, 3] (mean 2, sample std 1) and [0, 0, 6] (mean 2, std √12)
    adv = group_advantages([1.0, 2.0, 3.0, 0.0, 0.0, 6.0], group_size=3)
    s = 12 ** 0.5
    expected = [-1 / (1 + GROUP_STD_EPS), 0.0, 1 / (1 + GROUP_STD_EPS),
                -2 / (s + GROUP_STD_EPS), -2 / (s + GROUP_STD_EPS), 4 / (s + GROUP_STD_EPS)]
    np.testing.assert_allclose(adv.numpy(), expected, rtol=1e-6)
    # Dr. GRPO: the same without the division by the std
    dr = group_advantages([1.0, 2.0, 3.0, 0.0, 0.0, 6.0], group_size=3, scale_by_std=False)
    np.testing.assert_allclose(dr.numpy(), [-1, 0, 1, -2, -2, 4], atol=1e-6)


def test_rloo_advantages_hand_worked():
    # R_i minus the mean of the other two: [1 − 2.5, 2 − 2, 3 − 1.5]; and G = 2: [0, 4] → [−4, 4]
    np.testing.assert_allclose(rloo_advantages([1.0, 2.0, 3.0], 3).numpy(), [-1.5, 0, 1.5], atol=1e-6)
    np.testing.assert_allclose(rloo_advantages([0.0, 4.0], 2).numpy(), [-4, 4], atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("G", [2, 3, 8])
def test_rloo_is_g_over_g_minus_1_times_the_centred_score(seed, G):
    r = torch.randn(5 * G, generator=torch.Generator().manual_seed(seed))
    loop = torch.tensor([float(r[i] - (r[(i // G) * G:(i // G + 1) * G].sum() - r[i]) / (G - 1))
                         for i in range(len(r))])
    rloo = rloo_advantages(r, G)
    np.testing.assert_allclose(rloo.numpy(), loop.numpy(), atol=1e-5)
    np.testing.assert_allclose(rloo.numpy(),
                               (G / (G - 1) * group_advantages(r, G, scale_by_std=False)).numpy(),
                               atol=1e-5)
    for adv in (rloo, group_advantages(r, G)):                      # each group sums to 0
        np.testing.assert_allclose(adv.reshape(-1, G).sum(1).numpy(), 0.0, atol=1e-5)


def test_group_of_equal_scores_gets_zero_advantage():
    for adv in (group_advantages([0.7] * 4, 4), rloo_advantages([0.7] * 4, 4)):
        assert torch.equal(adv, torch.zeros(4))


@pytest.mark.parametrize("bad, match", [
    (dict(scores=[1.0, 2.0, 3.0], group_size=2), "multiple of group_size"),
    (dict(scores=[1.0, 2.0], group_size=1), "group_size must be an int >= 2"),
    (dict(scores=[[1.0, 2.0]], group_size=2), r"\(B,\) sequence scores"),
    (dict(scores=[1.0, float("nan")], group_size=2), "non-finite"),
])
def test_group_baselines_reject_bad_input(bad, match):
    for fn in (group_advantages, rloo_advantages):
        with pytest.raises(ValueError, match=match):
            fn(**bad)
