"""Every bad input of the foundation raises a ValueError naming the argument: never a NaN."""

import math

import pytest
import torch

from ppo_core.advantages import gae, whiten
from ppo_core.kl_control import AdaptiveKLController
from ppo_core.losses import clipped_surrogate, kl_estimate, kl_penalty, ppo_objective, value_loss
from ppo_core.masking import logprobs_from_logits, masked_mean, masked_var, masked_whiten

Z = torch.zeros(4)
ONE = torch.ones(4)


@pytest.mark.parametrize("eps", [0.0, -0.1, float("nan"), float("inf")])
def test_clip_eps_must_be_positive_and_finite(eps):
    with pytest.raises(ValueError, match="clip_eps"):
        clipped_surrogate(Z, Z, ONE, eps)


@pytest.mark.parametrize("beta", [-0.01, float("nan"), float("inf")])
def test_beta_must_be_non_negative_and_finite(beta):
    with pytest.raises(ValueError, match="beta"):
        ppo_objective(Z, Z, ONE, 0.2, ref_logp=Z, beta=beta)
    with pytest.raises(ValueError, match="beta"):
        kl_penalty(Z, Z, beta)


@pytest.mark.parametrize("name,value", [("gamma", -0.1), ("gamma", 1.01), ("lam", -1.0),
                                        ("lam", 2.0), ("gamma", float("nan"))])
def test_gamma_and_lambda_in_unit_interval(name, value):
    kw = {"gamma": 0.99, "lam": 0.95, name: value}
    with pytest.raises(ValueError, match=name):
        gae(torch.ones(3, 2), torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(2), **kw)


def test_shape_mismatches_name_the_arguments():
    with pytest.raises(ValueError, match="old_logp"):
        clipped_surrogate(Z, torch.zeros(3), ONE, 0.2)
    with pytest.raises(ValueError, match="advantages"):
        clipped_surrogate(Z, Z, torch.ones(5), 0.2)
    with pytest.raises(ValueError, match="ref_logp"):
        kl_estimate(Z, torch.zeros(2))
    with pytest.raises(ValueError, match="returns"):
        value_loss(Z, Z, torch.zeros(2))
    with pytest.raises(ValueError, match="values"):
        gae(torch.ones(3, 2), torch.zeros(3, 3), torch.zeros(3, 2), torch.zeros(2))
    with pytest.raises(ValueError, match="last_value"):
        gae(torch.ones(3, 2), torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="mask"):
        masked_mean(torch.ones(2, 3), torch.ones(3, 2))


def test_all_zero_mask_is_refused():
    for fn in (lambda m: masked_mean(ONE, m), lambda m: masked_var(ONE, m),
               lambda m: clipped_surrogate(Z, Z, ONE, 0.2, mask=m), lambda m: whiten(ONE, m)):
        with pytest.raises(ValueError, match="all zeros"):
            fn(torch.zeros(4))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_inputs_are_refused(bad):
    x = torch.tensor([0.0, bad, 0.0, 0.0])
    with pytest.raises(ValueError, match="logp"):
        clipped_surrogate(x, Z, ONE, 0.2)
    with pytest.raises(ValueError, match="old_logp"):
        clipped_surrogate(Z, x, ONE, 0.2)
    with pytest.raises(ValueError, match="advantages"):
        clipped_surrogate(Z, Z, x, 0.2)
    with pytest.raises(ValueError, match="ref_logp"):
        kl_estimate(Z, x, "k3")
    with pytest.raises(ValueError, match="values"):
        value_loss(x, Z, Z)
    with pytest.raises(ValueError, match="rewards"):
        gae(x[:, None], torch.zeros(4, 1), torch.zeros(4, 1), torch.zeros(1))
    with pytest.raises(ValueError, match="values"):
        masked_mean(x)
    with pytest.raises(ValueError, match="logits"):
        logprobs_from_logits(x.reshape(1, 1, 4), torch.zeros(1, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="observed_kl"):
        AdaptiveKLController(0.1, 0.01).update(bad, 1)


def test_unknown_kl_kind():
    with pytest.raises(ValueError, match="kind"):
        kl_estimate(Z, Z, "k4")


def test_beta_without_reference_is_refused():
    with pytest.raises(ValueError, match="ref_logp"):
        ppo_objective(Z, Z, ONE, 0.2, beta=0.1)


def test_dones_must_be_binary():
    with pytest.raises(ValueError, match="dones"):
        gae(torch.ones(2, 1), torch.zeros(2, 1), torch.full((2, 1), 0.5), torch.zeros(1))


def test_error_message_names_the_value():
    with pytest.raises(ValueError) as err:
        clipped_surrogate(Z, Z, ONE, -0.5)
    assert "-0.5" in str(err.value)
    assert not math.isnan(clipped_surrogate(Z, Z, ONE, 0.2)[0].item())


# ------------------------------------------------------------------ edge cases (issue 13)

EMPTY = torch.zeros(0)


@pytest.mark.parametrize("fn", [
    lambda: clipped_surrogate(EMPTY, EMPTY, EMPTY, 0.2),
    lambda: ppo_objective(EMPTY, EMPTY, EMPTY, 0.2, ref_logp=EMPTY, beta=0.1),
    lambda: kl_penalty(EMPTY, EMPTY, 0.1),
    lambda: value_loss(EMPTY, EMPTY, EMPTY),
    lambda: value_loss(EMPTY, EMPTY, EMPTY, clip_eps=0.2),
    lambda: masked_mean(EMPTY),
    lambda: masked_mean(torch.zeros(0, 3), torch.zeros(0, 3)),
    lambda: masked_mean(torch.zeros(2, 0), axis=1),
    lambda: masked_var(EMPTY),
    lambda: whiten(EMPTY),
], ids=["clipped_surrogate", "ppo_objective", "kl_penalty", "value_loss", "value_loss_clipped",
        "masked_mean", "masked_mean_mask", "masked_mean_axis", "masked_var", "whiten"])
def test_empty_inputs_are_refused_not_nan_or_max_error(fn):
    """An average over nothing is NaN and a max over nothing a RuntimeError: both are refused
    with a ValueError that says the input is empty."""
    with pytest.raises(ValueError, match="empty"):
        fn()


def test_masked_mean_along_an_axis_of_an_empty_batch_is_empty_not_an_error():
    # reducing over a non-empty axis of a batch with no rows is well defined: no rows out
    assert masked_mean(torch.zeros(0, 3), axis=1).shape == (0,)


@pytest.mark.parametrize("bad", [-1.0, 2.0, 0.5])
def test_non_binary_masks_are_refused(bad):
    mask = torch.tensor([1.0, bad, 0.0, 1.0])
    for fn in (lambda m: masked_mean(ONE, m), lambda m: masked_var(ONE, m),
               lambda m: whiten(ONE, m), lambda m: clipped_surrogate(Z, Z, ONE, 0.2, mask=m),
               lambda m: kl_penalty(Z, Z, 0.1, mask=m), lambda m: value_loss(Z, Z, ONE, mask=m),
               lambda m: ppo_objective(Z, Z, ONE, 0.2, mask=m)):
        with pytest.raises(ValueError, match="mask must be binary"):
            fn(mask)
    # 0/1 in any dtype is a mask
    for m in (torch.tensor([1, 0, 1, 1]), torch.tensor([1.0, 0.0, 1.0, 1.0]),
              torch.tensor([True, False, True, True])):
        assert masked_mean(torch.arange(4.0), m).item() == pytest.approx(5 / 3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_far_outside_the_trust_region_gives_a_finite_loss(dtype):
    """The log-ratio bound of 20 is beyond fp16's range (e^20 > 65504): the losses compute in
    float32, so a half-precision batch with a log-ratio of 30 still gives a finite loss and
    finite gradients, as the docstring promises."""
    logp = torch.tensor([0.0, -1.0, -2.0, -0.5], dtype=dtype, requires_grad=True)
    old = torch.tensor([-30.0, -1.0, 28.0, -0.5], dtype=dtype)
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=dtype)
    clip_off = clipped_surrogate(logp, old, adv, None)
    for loss, stats in (clipped_surrogate(logp, old, adv, 0.2), clip_off,
                        ppo_objective(logp, old, adv, 0.2, ref_logp=old, beta=0.1, kl_kind="k3",
                                      values=logp * 2, returns=adv, value_clip_eps=0.2,
                                      entropy=-logp, ent_coef=0.01)):
        assert loss.dtype == torch.float32 and torch.isfinite(loss), (loss, dtype)
        assert all(math.isfinite(v) for v in stats.values()), stats
    # gradients: where the clip acts they are 0, elsewhere small. (Unclipped, r = e^20 has a
    # gradient of e^20 that no fp16 tensor can hold: that case needs float32 master weights.)
    for loss, _ in (clipped_surrogate(logp, old, adv, 0.2),
                    ppo_objective(logp, old, adv, 0.2, ref_logp=old, beta=0.1, kl_kind="k2",
                                  values=logp * 2, returns=adv, value_clip_eps=0.2)):
        logp.grad = None
        loss.backward()
        assert logp.grad.dtype == dtype and bool(torch.isfinite(logp.grad).all()), logp.grad
    assert torch.isfinite(kl_estimate(logp, old, "k3")).all()
    assert torch.isfinite(kl_penalty(logp, old, 0.1, "k3"))
    # the float32 result equals the float32 computation on the same (rounded) numbers
    ref, _ = clipped_surrogate(logp.float(), old.float(), adv.float(), 0.2)
    assert clipped_surrogate(logp, old, adv, 0.2)[0].item() == pytest.approx(ref.item())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_masked_statistics_do_not_overflow(dtype):
    x = torch.full((4000,), 100.0, dtype=dtype)          # an fp16 sum would reach 4e5 > 65504
    m = torch.ones(4000)
    assert masked_mean(x, m).dtype == dtype and masked_mean(x, m).item() == 100.0
    assert masked_var(x, m).item() == 0.0
    w = masked_whiten(torch.arange(8.0).to(dtype) * 1000, torch.ones(8))
    assert w.dtype == dtype and bool(torch.isfinite(w).all())


def test_huge_clip_ranges_clip_nothing_instead_of_overflowing():
    """ε = 1e300 is finite and > 0: it clips nothing, as it says (no float32 overflow error)."""
    logp, old, adv = torch.tensor([0.5, -0.5]), torch.zeros(2), torch.tensor([1.0, -1.0])
    loss, stats = clipped_surrogate(logp, old, adv, 1e300)
    assert loss.item() == pytest.approx(clipped_surrogate(logp, old, adv, None)[0].item())
    assert stats["clipfrac"] == 0.0
    vl, _ = value_loss(torch.tensor([5.0]), torch.zeros(1), torch.zeros(1), clip_eps=1e300)
    assert vl.item() == pytest.approx(12.5)
