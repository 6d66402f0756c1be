"""Reference tests for ppo_core.trainers.bandits: environments, exact KL, REINFORCE's gradient,
the baseline's variance reduction, and bandit PPO's clip / penalty / divergence behaviour."""

import json
import math

import pytest
import torch

from ppo_core.trainers.bandits import (BanditPPOConfig, BernoulliBandit, GaussianBandit, diverged,
                              entropy, exact_kl, gradient_variance, kl_regularised_optimum,
                              log_probs, make_bandit, reinforce_loss, score_function_gradients,
                              train_bandit_ppo)
from ppo_core.losses import ppo_objective
from ppo_core.metrics import read_log

MEANS = (0.3, 0.5, 0.55, 0.6, 0.8)


def test_bernoulli_and_gaussian_rewards_have_the_arm_means():
    g = torch.Generator().manual_seed(0)
    actions = torch.arange(3).repeat(20000)
    bern = BernoulliBandit([0.1, 0.5, 0.9])
    r = bern.pull(actions, g).view(-1, 3).mean(0)
    assert torch.allclose(r, torch.tensor([0.1, 0.5, 0.9]), atol=0.015)
    gauss = GaussianBandit([-1.0, 0.0, 2.0], stds=[0.5, 1.0, 2.0])
    x = gauss.pull(actions, g).view(-1, 3)
    assert torch.allclose(x.mean(0), torch.tensor([-1.0, 0.0, 2.0]), atol=0.05)
    assert torch.allclose(x.std(0), torch.tensor([0.5, 1.0, 2.0]), rtol=0.05)


@pytest.mark.parametrize("bad", [dict(kind="poisson"), dict(means=(0.5,)), dict(means=(0.2, 1.5))])
def test_bad_bandits_are_refused(bad):
    with pytest.raises(ValueError):
        make_bandit(**{"kind": "bernoulli", **bad})


def test_exact_kl_matches_hand_computation_and_entropy_of_uniform():
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.9, 0.1])
    by_hand = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert exact_kl(p.log(), q.log()).item() == pytest.approx(by_hand, rel=1e-5)
    assert exact_kl(q.log(), q.log()).item() == pytest.approx(0.0, abs=1e-7)
    assert entropy(torch.zeros(4)).item() == pytest.approx(math.log(4), rel=1e-6)


def test_reinforce_gradient_is_unbiased_and_the_closed_form_matches_autograd():
    bandit = make_bandit("bernoulli", MEANS)
    logits = torch.tensor([0.5, -0.2, 0.1, 0.0, -0.4])
    res = gradient_variance(bandit, logits, batch_size=16, n_batches=20000, baseline="loo")
    # exact ∇J = π ⊙ (μ − π·μ); the sample mean is within a few standard errors of it
    se = math.sqrt(res["variance"] / 20000)
    assert res["bias_norm"] < 5 * se
    # closed form (e_a − π)·R equals autograd of reinforce_loss (sign flipped)
    g = torch.Generator().manual_seed(1)
    actions = torch.multinomial(torch.softmax(logits, -1), 8, True, generator=g).view(1, 8)
    rewards = bandit.pull(actions, g)
    theta = logits.clone().unsqueeze(0).requires_grad_(True)
    reinforce_loss(log_probs(theta, actions), rewards).backward()
    closed = score_function_gradients(logits, actions, rewards, "none")
    assert torch.allclose(-theta.grad, closed, atol=1e-6)


def test_ppo_objective_gradient_at_ratio_one_equals_reinforce():
    """At the first epoch r(θ) = 1 and the clipped surrogate's gradient is REINFORCE's."""
    g = torch.Generator().manual_seed(2)
    theta = torch.randn(1, 5, generator=g).requires_grad_(True)
    actions = torch.randint(0, 5, (1, 32), generator=g)
    adv = torch.randn(1, 32, generator=g)
    old = log_probs(theta, actions).detach()
    loss, _ = ppo_objective(log_probs(theta, actions), old, adv, 0.2)
    (g1,) = torch.autograd.grad(loss, theta)
    (g2,) = torch.autograd.grad(reinforce_loss(log_probs(theta, actions), adv), theta)
    assert torch.allclose(g1, g2, atol=1e-6)


def test_baseline_reduces_measured_gradient_variance():
    bandit = make_bandit("bernoulli", MEANS)
    logits = torch.zeros(5)
    none = gradient_variance(bandit, logits, 16, 4000, "none")["variance"]
    loo = gradient_variance(bandit, logits, 16, 4000, "loo")["variance"]
    assert loo < 0.6 * none                      # measured ≈ 0.45× on this bandit


def test_training_learns_the_best_arm_and_writes_the_documented_log(tmp_path):
    bandit = make_bandit("bernoulli", MEANS)
    path = tmp_path / "bandit.jsonl"
    recs = train_bandit_ppo(bandit, BanditPPOConfig(updates=30, lr=1.0, n_seeds=8), log_path=path)
    assert len(recs) == 30 and not diverged(recs)
    assert recs[-1]["bandit/p_best"] > 0.8 > recs[0]["bandit/p_best"]
    keys = {"charts/episodic_return", "losses/approx_kl", "losses/clipfrac", "objective/kl",
            "objective/beta", "losses/entropy", "bandit/p_best", "bandit/kl_step"}
    assert keys <= set(recs[0])
    on_disk = read_log(path)
    assert on_disk == json.loads(json.dumps(recs))       # same records, same order
    assert sum(recs[-1]["bandit/probs"]) == pytest.approx(1.0, abs=1e-5)


def test_runs_are_reproducible_and_seeds_are_independent():
    bandit = make_bandit("bernoulli", MEANS)
    cfg = BanditPPOConfig(updates=5, n_seeds=4, seed=3)
    a, b = train_bandit_ppo(bandit, cfg), train_bandit_ppo(bandit, cfg)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "perf/seconds"} for r in rs]
    assert strip(a) == strip(b)
    # with Adam too (elementwise), and a Gaussian bandit
    recs = train_bandit_ppo(make_bandit("gaussian", (0.0, 1.0, 0.5), stds=1.0),
                            BanditPPOConfig(updates=20, optimizer="adam", lr=0.1, n_seeds=4))
    assert recs[-1]["bandit/p_best"] > 0.6


def test_clip_bounds_the_per_update_step_and_penalty_bounds_the_drift():
    """The chapter 02 experiment, small: several epochs per batch with a large step."""
    bandit = make_bandit("bernoulli", MEANS)
    base = dict(updates=25, batch_size=32, update_epochs=10, lr=5.0, n_seeds=16,
                init_logits=(1.0, 2.0, 0.0, 0.0, 0.0))
    run = {name: train_bandit_ppo(bandit, BanditPPOConfig(**base, **kw)) for name, kw in {
        "none": dict(clip_eps=None), "clip": dict(clip_eps=0.2),
        "kl": dict(clip_eps=None, beta=0.1), "both": dict(clip_eps=0.2, beta=0.1)}.items()}
    step = {k: max(r["bandit/kl_step"] for r in v) for k, v in run.items()}
    drift = {k: v[-1]["objective/kl"] for k, v in run.items()}
    assert step["clip"] < 0.2 * step["none"] and step["both"] < 0.2 * step["kl"]
    assert step["kl"] > 0.5                              # the penalty does not stop a big step
    assert drift["kl"] < 0.7 * drift["clip"] and drift["both"] < 0.5 * drift["clip"]
    assert run["clip"][-1]["losses/clipfrac"] > 0 and run["none"][-1]["losses/clipfrac"] == 0


def test_adaptive_beta_moves_towards_the_target():
    bandit = make_bandit("bernoulli", MEANS)
    recs = train_bandit_ppo(bandit, BanditPPOConfig(updates=60, beta=0.05, kl_target=0.05,
                                                    kl_horizon=128, n_seeds=16,
                                                    init_logits=(1.0, 2.0, 0.0, 0.0, 0.0)))
    betas = [r["objective/beta"] for r in recs]
    assert max(r["objective/kl"] for r in recs) > 0.3    # the drift overshot the target ...
    assert betas[-1] > 3 * betas[0]                      # ... so the controller raised β ...
    assert 0.02 < recs[-1]["objective/kl"] < 0.12        # ... and pulled KL back near 0.05


def test_exploding_logits_are_reported_as_divergence_not_nan():
    bandit = make_bandit("bernoulli", MEANS)
    recs = train_bandit_ppo(bandit, BanditPPOConfig(clip_eps=None, lr=100.0, update_epochs=16, n_seeds=8,
                                                    init_logits=(1.0, 2.0, 0.0, 0.0, 0.0)))
    assert diverged(recs) and recs[-1]["bandit/diverged"] == 1
    assert all(math.isfinite(v) for r in recs for v in r.values() if isinstance(v, float))


@pytest.mark.parametrize("field,value", [("lr", 0.0), ("lr", float("nan")), ("update_epochs", 0),
                                         ("clip_eps", -0.1), ("beta", -1.0), ("optimizer", "rmsprop"),
                                         ("init_logits", (0.0, 1.0)), ("batch_size", 2.5)])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        train_bandit_ppo(make_bandit("bernoulli", MEANS), BanditPPOConfig(**{field: value}))


def test_kl_regularised_optimum_maximises_the_penalised_reward():
    ref, mu, beta = torch.tensor([1.0, 2.0, 0.0]), torch.tensor([0.2, 0.5, 0.9]), 0.3
    star = kl_regularised_optimum(ref, mu, beta)

    def value(logits):                        # E_π[R] − β·KL(π‖π_ref), exactly
        return float((torch.softmax(logits, -1) * mu).sum() - beta * exact_kl(logits, ref))
    g = torch.Generator().manual_seed(0)
    best = value(star)
    for _ in range(200):                      # no random perturbation does better
        assert value(star + 0.3 * torch.randn(3, generator=g)) <= best + 1e-6
    assert torch.softmax(kl_regularised_optimum(ref, mu, 0.0), -1)[2] > 0.999
    assert torch.allclose(kl_regularised_optimum(ref, mu, 1e4), torch.log_softmax(ref, -1), atol=1e-3)
