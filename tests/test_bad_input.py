"""Every bad input of the foundation raises a ValueError naming the argument: never a NaN."""

import math

import pytest
import torch

from ppo_core.advantages import gae, whiten
from ppo_core.kl_control import AdaptiveKLController
from ppo_core.losses import clipped_surrogate, kl_estimate, kl_penalty, ppo_objective, value_loss
from ppo_core.masking import logprobs_from_logits, masked_mean, masked_var

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
