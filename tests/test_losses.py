"""Reference tests for ppo_core.losses: hand-computed tables, exact KLs, edge cases."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ppo_core.losses import (MAX_LOG_RATIO, categorical_kl, clipped_surrogate, entropy_from_logits, kl_estimate,
                             kl_penalty, ppo_objective, value_loss)

RATIOS = [0.5, 1.0, 1.5]
EPS = 0.2

# Hand-computed per-sample PPO-Clip objective min(r·A, clip(r, 0.8, 1.2)·A) at ε = 0.2,
# and whether the clipped branch is the active (gradient-free) one.
#   (r,   A)   : objective, clip active
TABLE = {
    (0.5, +1): (0.5, False),    # r·A = 0.5 < 0.8·1: unclipped branch, gradient flows
    (1.0, +1): (1.0, False),
    (1.5, +1): (1.2, True),     # capped at (1+ε)·A
    (0.5, -1): (-0.8, True),    # capped at (1−ε)·A: no reward for pushing r lower
    (1.0, -1): (-1.0, False),
    (1.5, -1): (-1.5, False),   # r·A = −1.5 < −1.2: unclipped, gradient flows
}


@pytest.mark.parametrize("r,adv", list(TABLE))
def test_clipped_surrogate_matches_hand_table(r, adv):
    expected, active = TABLE[(r, adv)]
    logp = torch.tensor([math.log(r)], requires_grad=True)
    loss, stats = clipped_surrogate(logp, torch.zeros(1), torch.tensor([float(adv)]), EPS)
    assert loss.item() == pytest.approx(-expected, abs=1e-6)
    assert stats["clipfrac"] == (1.0 if active else 0.0)
    loss.backward()
    if active:
        assert logp.grad.item() == 0.0                     # exactly zero where clipped
    else:
        # d(−r·A)/d logp = −r·A
        assert logp.grad.item() == pytest.approx(-r * adv, rel=1e-6)


def test_clipped_surrogate_batch_mean_and_stats():
    logp = torch.tensor(RATIOS * 2).log()
    adv = torch.tensor([1.0] * 3 + [-1.0] * 3)
    loss, stats = clipped_surrogate(logp, torch.zeros(6), adv, EPS)
    expected = sum(TABLE[(r, a)][0] for r, a in zip(RATIOS * 2, [1] * 3 + [-1] * 3)) / 6
    assert loss.item() == pytest.approx(-expected, abs=1e-6)
    assert stats["clipfrac"] == pytest.approx(2 / 6)
    assert stats["ratio_max"] == pytest.approx(1.5)
    assert stats["ratio_min"] == pytest.approx(0.5)
    assert stats["ratio_mean"] == pytest.approx(1.0)
    # k1 of KL(old‖new) = mean(old_logp − logp); k3 = mean((r − 1) − log r)
    assert stats["approx_kl"] == pytest.approx(-sum(math.log(r) for r in RATIOS) / 3, abs=1e-6)
    k3 = sum((r - 1) - math.log(r) for r in RATIOS) / 3
    assert stats["approx_kl_k3"] == pytest.approx(k3, abs=1e-6)


def test_clip_off_is_plain_importance_sampling():
    logp = torch.tensor([math.log(3.0)], requires_grad=True)
    loss, stats = clipped_surrogate(logp, torch.zeros(1), torch.ones(1), None)
    assert loss.item() == pytest.approx(-3.0)
    assert stats["clipfrac"] == 0.0


def test_mask_ignores_padded_entries():
    logp = torch.tensor([[0.1, 0.2, 5.0]])
    old = torch.zeros(1, 3)
    adv = torch.tensor([[1.0, -1.0, 1e9]])
    mask = torch.tensor([[1, 1, 0]])
    loss, stats = clipped_surrogate(logp, old, adv, EPS, mask)
    ref, ref_stats = clipped_surrogate(logp[:, :2], old[:, :2], adv[:, :2], EPS)
    assert loss.item() == pytest.approx(ref.item())
    assert stats == pytest.approx(ref_stats)


def test_large_log_ratios_give_finite_loss_and_gradients():
    logp = torch.tensor([100.0, -100.0, 100.0, -100.0], requires_grad=True)
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    for clip in (EPS, None):
        loss, stats = ppo_objective(logp, torch.zeros(4), adv, clip,
                                    ref_logp=torch.zeros(4), beta=0.1, kl_kind="k3")
        (grad,) = torch.autograd.grad(loss, logp)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        assert all(math.isfinite(v) for v in stats.values())
    # the restoring force survives: with A < 0 and r = e^100, the gradient pushes logp down
    assert grad[2] > 0
    assert MAX_LOG_RATIO == 20.0


# ---- KL estimators -------------------------------------------------------------------------

def test_kl_estimators_formulas():
    logp = torch.tensor([-1.0, -2.0])
    ref = torch.tensor([-1.5, -0.5])
    d = ref - logp
    assert torch.allclose(kl_estimate(logp, ref, "k1"), -d)
    assert torch.allclose(kl_estimate(logp, ref, "k2"), 0.5 * d ** 2)
    assert torch.allclose(kl_estimate(logp, ref, "k3"), torch.exp(d) - 1 - d)


@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
def test_every_estimator_is_zero_for_equal_policies(kind):
    logp = torch.randn(50)
    assert torch.equal(kl_estimate(logp, logp.clone(), kind), torch.zeros(50))


@settings(max_examples=200, deadline=None)
@given(st.floats(-30, 30), st.floats(-30, 30))
def test_k3_is_non_negative(a, b):
    assert kl_estimate(torch.tensor([a]), torch.tensor([b]), "k3").item() >= 0.0


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("kind", ["k1", "k3"])
def test_unbiased_estimators_match_exact_kl(seed, kind):
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(torch.randn(6, generator=g), 0)
    q = torch.softmax(torch.randn(6, generator=g), 0)
    exact = float((p * (p / q).log()).sum())                   # KL(p‖q)
    samples = torch.multinomial(p, 20_000, replacement=True, generator=g)
    est = kl_estimate(p.log()[samples], q.log()[samples], kind)
    se = float(est.std()) / math.sqrt(len(est))
    assert abs(float(est.mean()) - exact) < 3 * se + 1e-9


def test_kl_penalty_is_beta_times_masked_mean():
    logp, ref = torch.randn(2, 4), torch.randn(2, 4)
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])
    est = kl_estimate(logp, ref, "k2")
    expected = 0.3 * est[mask.bool()].mean()
    assert kl_penalty(logp, ref, 0.3, "k2", mask).item() == pytest.approx(expected.item())


# ---- KL gradients: where the estimate goes decides which KL's gradient it gives -----------
# Exact expectations over a small categorical (a sum weighted by π, no sampling), checked
# against autograd on the exact KLs in both directions (chapter 02, section 3).

def _policy_and_reference(seed):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(6, generator=g, dtype=torch.float64).requires_grad_(True)
    ref = torch.log_softmax(torch.randn(6, generator=g, dtype=torch.float64), 0)
    return theta, ref


def _grad(f, theta):
    return torch.autograd.grad(f, theta, retain_graph=True)[0]


@pytest.mark.parametrize("seed", range(3))
def test_kl_placement_gradients_are_exact(seed):
    theta, ref = _policy_and_reference(seed)
    lp = torch.log_softmax(theta, 0)
    pi = lp.exp().detach()                                          # weights held fixed
    fwd = _grad((lp.exp() * (lp - ref)).sum(), theta)               # ∇ KL(π‖π_ref)
    rev = _grad((ref.exp() * (ref - lp)).sum(), theta)              # ∇ KL(π_ref‖π)
    k = {kind: kl_estimate(lp, ref, kind) for kind in ("k1", "k2", "k3")}
    in_reward = _grad((pi * k["k1"].detach() * lp).sum(), theta)    # E[k1·∇log π]
    assert torch.allclose(in_reward, fwd, atol=1e-12)
    assert torch.allclose(_grad((pi * k["k2"]).sum(), theta), fwd, atol=1e-12)
    assert torch.allclose(_grad((pi * k["k3"]).sum(), theta), rev, atol=1e-12)
    assert torch.allclose(_grad((pi * k["k1"]).sum(), theta), torch.zeros(6, dtype=torch.float64),
                          atol=1e-12)
    assert (fwd - rev).abs().max() > 1e-3                           # the directions differ
    # k2 or k3 in the *reward* (score function, E[k·∇log π]) is biased: k3 gives fwd − rev
    k3_in_reward = _grad((pi * k["k3"].detach() * lp).sum(), theta)
    assert torch.allclose(k3_in_reward, fwd - rev, atol=1e-12)
    k2_in_reward = _grad((pi * k["k2"].detach() * lp).sum(), theta)
    assert (k2_in_reward - fwd).abs().max() > 1e-3


@pytest.mark.parametrize("kind,target", [(None, "forward"), ("k2", "forward"),
                                         ("k3", "reverse"), ("k1", "zero")])
def test_ppo_objective_kl_gradient_on_policy(kind, target):
    # π = (0.1, 0.2, 0.3, 0.4): a batch holding action a exactly 10·π(a) times makes the
    # batch mean an exact expectation under π. On-policy (old = logp), zero advantages.
    theta = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64).log().requires_grad_(True)
    ref = torch.log_softmax(torch.tensor([0.5, -0.3, 0.2, 0.0], dtype=torch.float64), 0)
    actions = torch.repeat_interleave(torch.arange(4), torch.tensor([1, 2, 3, 4]))
    lp = torch.log_softmax(theta, 0)
    kw = {} if kind is None else {"kl_kind": kind}
    loss, _ = ppo_objective(lp[actions], lp[actions].detach(), torch.zeros(10, dtype=torch.float64),
                            0.2, ref_logp=ref[actions], beta=1.0, **kw)
    want = {"forward": _grad((lp.exp() * (lp - ref)).sum(), theta),
            "reverse": _grad((ref.exp() * (ref - lp)).sum(), theta),
            "zero": torch.zeros(4, dtype=torch.float64)}[target]
    assert torch.allclose(_grad(loss, theta), want, atol=1e-12)


# ---- value loss, entropy, composite -------------------------------------------------------

def test_value_loss_plain_and_clipped():
    v = torch.tensor([1.0, 3.0])
    old = torch.tensor([0.0, 0.0])
    ret = torch.tensor([0.0, 0.0])
    loss, _ = value_loss(v, old, ret)
    assert loss.item() == pytest.approx(0.5 * (1 + 9) / 2)
    # clipped: V_old + clip(V − V_old, −0.5, 0.5) = 0.5 for both; max((V−R)², (0.5−R)²) = (V−R)²
    loss_c, stats = value_loss(v, old, ret, clip_eps=0.5)
    assert loss_c.item() == pytest.approx(loss.item())
    # returns far away: the clipped error is larger and wins
    loss_c2, stats2 = value_loss(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([-2.0]), 0.5)
    assert loss_c2.item() == pytest.approx(0.5 * 9.0)
    assert stats2["value_clipfrac"] == 0.0
    # V jumped past the target: the clipped value (0.5) is further from R = 2 and wins
    loss_c3, stats3 = value_loss(torch.tensor([3.0]), torch.tensor([0.0]), torch.tensor([2.0]), 0.5)
    assert loss_c3.item() == pytest.approx(0.5 * 1.5 ** 2)
    assert stats3["value_clipfrac"] == 1.0


def test_entropy_from_logits():
    assert entropy_from_logits(torch.zeros(4)).item() == pytest.approx(math.log(4))
    assert entropy_from_logits(torch.tensor([0.0, -1e4])).item() == pytest.approx(0.0, abs=1e-6)
    p = torch.tensor([0.2, 0.3, 0.5])
    assert entropy_from_logits(p.log()).item() == pytest.approx(float(-(p * p.log()).sum()), rel=1e-6)


def test_ppo_objective_composes_its_terms():
    torch.manual_seed(0)
    logp = torch.randn(8, requires_grad=True)
    old, ref, adv = torch.randn(8), torch.randn(8), torch.randn(8)
    v, ret, ent = torch.randn(8, requires_grad=True), torch.randn(8), torch.rand(8)
    loss, stats = ppo_objective(logp, old, adv, 0.2, ref_logp=ref, beta=0.05, kl_kind="k3",
                                values=v, old_values=v.detach(), returns=ret,
                                vf_coef=0.5, entropy=ent, ent_coef=0.01)
    clip, _ = clipped_surrogate(logp, old, adv, 0.2)
    kl = kl_estimate(logp, ref, "k3").mean()
    vl, _ = value_loss(v, v.detach(), ret)
    expected = clip + 0.05 * kl + 0.5 * vl - 0.01 * ent.mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    for key in ("clipfrac", "approx_kl", "approx_kl_k3", "ratio_mean", "ratio_max", "kl_ref",
                "kl_penalty", "beta", "value_loss", "entropy", "loss", "policy_loss"):
        assert key in stats
    assert stats["kl_ref"] == pytest.approx(kl.item(), rel=1e-6)


def test_ppo_objective_uses_exact_kl_when_given():
    logp = torch.zeros(3, requires_grad=True)
    loss0, _ = ppo_objective(logp, torch.zeros(3), torch.zeros(3), 0.2)
    loss1, stats = ppo_objective(logp, torch.zeros(3), torch.zeros(3), 0.2,
                                 kl=torch.tensor([1.0, 2.0, 3.0]), beta=0.5)
    assert (loss1 - loss0).item() == pytest.approx(0.5 * 2.0)
    assert stats["kl_penalty"] == pytest.approx(1.0)


def test_stats_are_detached_floats():
    _, stats = ppo_objective(torch.zeros(3, requires_grad=True), torch.zeros(3), torch.ones(3))
    assert all(isinstance(v, float) for v in stats.values())


def test_categorical_kl_is_exact_and_zero_on_equal_inputs():
    p = torch.tensor([0.2, 0.3, 0.5])
    q = torch.tensor([0.6, 0.3, 0.1])
    exact = float((p * (p / q).log()).sum())
    assert categorical_kl(p.log(), q.log()).item() == pytest.approx(exact, rel=1e-6)
    assert categorical_kl(p.log(), p.log() + 3.0).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="logits_q"):
        categorical_kl(p.log(), torch.zeros(2))


# ---------------------------------------------------------------- bugs the suite once missed (issue 13)

@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
def test_ppo_objective_kl_term_ignores_masked_entries(kind):
    """Padded entries hold a huge log-ratio to the reference: the KL term (value, penalty and
    gradient) must average over the unmasked entries only, like every other term."""
    logp = torch.tensor([-1.0, -0.5, -2.0, -0.1], requires_grad=True)
    ref = torch.tensor([-1.2, -0.3, 6.0, -9.0])
    mask = torch.tensor([1, 1, 0, 0])
    adv = torch.zeros(4)                                # only the KL term has a gradient
    loss, stats = ppo_objective(logp, logp.detach(), adv, 0.2, mask=mask, ref_logp=ref,
                                beta=0.5, kl_kind=kind)
    expected = float(kl_estimate(logp.detach()[:2], ref[:2], kind).mean())
    assert stats["kl_ref"] == pytest.approx(expected)
    assert stats["kl_penalty"] == pytest.approx(0.5 * expected)
    loss.backward()
    assert logp.grad[2:].abs().max() == 0 and logp.grad[:2].abs().max() > 0
    # the exact per-sample KL (kl=) is masked the same way
    _, stats = ppo_objective(logp, logp.detach(), adv, 0.2, mask=mask, kl=ref.abs(), beta=0.5)
    assert stats["kl_ref"] == pytest.approx(float(ref[:2].abs().mean()))


def test_old_logp_is_a_constant_even_when_it_carries_a_graph():
    """old_logp computed by the same network without no_grad still carries a graph: the loss
    must treat it as a constant. Then, at r = 1, ∇loss = −mean(Â·∇log π) (the policy
    gradient); differentiating through old_logp too would cancel it to 0."""
    theta = torch.tensor([0.3, -0.2, 0.1], requires_grad=True)
    actions = torch.tensor([0, 2, 1, 0])
    adv = torch.tensor([1.0, -0.5, 2.0, 0.3])

    def logp_of():
        return torch.log_softmax(theta, 0)[actions]            # (4,) log π_θ(a)
    old_leaf = logp_of().detach().requires_grad_(True)
    loss, _ = ppo_objective(logp_of(), old_leaf, adv, 0.2)
    loss.backward()
    assert old_leaf.grad is None                          # nothing flows into old_logp
    theta.grad = None
    loss, _ = ppo_objective(logp_of(), logp_of(), adv, 0.2)     # old_logp not detached
    loss.backward()
    got = theta.grad.clone()
    theta.grad = None
    (-(adv * logp_of()).mean()).backward()                # the policy gradient at r = 1
    torch.testing.assert_close(got, theta.grad)
    assert got.abs().max() > 0.05


# ------------------------------------------------------------------ chapter 07's objectives

import numpy as np  # noqa: E402

from ppo_core.losses import LOSS_AGGS, aggregate_loss, dpo_loss  # noqa: E402

#: (r, Â) → (objective, clip active) with ε_low = 0.2, ε_high = 0.28 (DAPO's values)
ASYM_TABLE = {
    (1.25, 1): (1.25, False),   # inside 1 + ε_high: unclipped (the symmetric clip stops at 1.2)
    (1.5, 1): (1.28, True),     # beyond 1 + ε_high: clipped
    (0.7, -1): (-0.8, True),    # below 1 − ε_low: clipped, as with the symmetric clip
    (0.9, -1): (-0.9, False),
    (1.3, -1): (-1.3, False),   # r·Â = −1.3 < −1.28: the unclipped branch is the minimum
    (0.7, 1): (0.7, False),
}


@pytest.mark.parametrize("r,adv", list(ASYM_TABLE))
def test_asymmetric_clip_matches_hand_table(r, adv):
    expected, active = ASYM_TABLE[(r, adv)]
    logp = torch.tensor([math.log(r)], requires_grad=True)
    loss, stats = clipped_surrogate(logp, torch.zeros(1), torch.tensor([float(adv)]), 0.2,
                                    clip_eps_high=0.28)
    assert loss.item() == pytest.approx(-expected, abs=1e-6)
    assert stats["clipfrac"] == (1.0 if active else 0.0)
    loss.backward()
    assert logp.grad.item() == (0.0 if active else pytest.approx(-r * adv, rel=1e-6))


def test_asymmetric_clip_equal_to_symmetric_when_high_equals_low():
    torch.manual_seed(0)
    logp, old, adv = torch.randn(20), torch.randn(20), torch.randn(20)
    a, _ = clipped_surrogate(logp, old, adv, 0.2)
    b, _ = clipped_surrogate(logp, old, adv, 0.2, clip_eps_high=0.2)
    assert a.item() == b.item()
    with pytest.raises(ValueError, match="clip_eps_high needs clip_eps"):
        clipped_surrogate(logp, old, adv, None, clip_eps_high=0.28)
    with pytest.raises(ValueError, match="clip_eps_high"):
        clipped_surrogate(logp, old, adv, 0.2, clip_eps_high=-1.0)


def test_loss_aggregations_hand_worked():
    x = torch.tensor([[1.0, 2.0, 9.0], [3.0, 9.0, 9.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert aggregate_loss(x, m, "token-mean").item() == pytest.approx((1 + 2 + 3) / 3)
    assert aggregate_loss(x, m, "seq-mean-token-mean").item() == pytest.approx((1.5 + 3) / 2)
    assert aggregate_loss(x, m, "seq-mean-token-sum-norm").item() == pytest.approx((3 + 3) / 2 / 3)
    assert aggregate_loss(x, m, "seq-mean-token-sum-norm", norm=6).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="loss_agg must be one of"):
        aggregate_loss(x, m, "sum")
    with pytest.raises(ValueError, match="no token"):
        aggregate_loss(x, torch.tensor([[1, 0, 0], [0, 0, 0]]), "seq-mean-token-mean")
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        aggregate_loss(torch.ones(4), None, "seq-mean-token-mean")


@pytest.mark.parametrize("mode", LOSS_AGGS)
def test_ppo_objective_aggregates_surrogate_and_kl_alike(mode):
    torch.manual_seed(1)
    logp = torch.randn(3, 5, requires_grad=True)
    old, ref, adv = torch.randn(3, 5), torch.randn(3, 5), torch.randn(3, 5)
    m = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]])
    loss, _ = ppo_objective(logp, old, adv, 0.2, mask=m, ref_logp=ref, beta=0.1, kl_kind="k3",
                            loss_agg=mode)
    ratio = (logp - old).exp()
    obj = torch.minimum(ratio * adv, ratio.clamp(0.8, 1.2) * adv) - 0.1 * kl_estimate(logp, ref, "k3")
    assert loss.item() == pytest.approx(-aggregate_loss(obj, m, mode).item(), rel=1e-5)


def test_dpo_loss_matches_its_formula():
    lc, lr = torch.tensor([-3.0, -2.0], requires_grad=True), torch.tensor([-5.0, -1.0], requires_grad=True)
    rc, rr = torch.tensor([-4.0, -2.5]), torch.tensor([-4.0, -1.5])
    loss, stats = dpo_loss(lc, lr, rc, rr, beta=0.5)
    h = 0.5 * ((lc - rc) - (lr - rr))                   # [1.0, 0.0]
    expected = -torch.nn.functional.logsigmoid(h).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss.item() == pytest.approx((math.log(1 + math.exp(-1)) + math.log(2)) / 2, rel=1e-6)
    assert stats["reward_chosen"] == pytest.approx(0.5 * (1.0 + 0.5) / 2)
    assert stats["reward_rejected"] == pytest.approx(0.5 * (-1.0 + 0.5) / 2)
    assert stats["reward_margin"] == pytest.approx(0.5)
    assert stats["reward_accuracy"] == pytest.approx(0.5)    # pair 2 is a tie: not counted right
    loss.backward()
    # d loss / d log π(y_w) = −β σ(−h) / B: more chosen probability lowers the loss
    np.testing.assert_allclose(lc.grad.numpy(), (-0.5 * torch.sigmoid(-h) / 2).detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(lr.grad.numpy(), (0.5 * torch.sigmoid(-h) / 2).detach().numpy(), rtol=1e-6)


def test_dpo_loss_is_log_2_at_the_reference_and_rejects_bad_input():
    z = torch.zeros(4)
    loss, stats = dpo_loss(z, z, z, z, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2))
    assert stats["reward_accuracy"] == 0.0
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(z, z, z, z, beta=0.0)
    with pytest.raises(ValueError, match="same shape"):
        dpo_loss(z, torch.zeros(3), z, z)
