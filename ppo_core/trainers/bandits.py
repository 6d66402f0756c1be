"""k-armed bandits, a softmax policy, REINFORCE and bandit PPO (introduced in chapter 01).

A bandit has no state: the policy is one vector of arm logits θ ∈ R^A and

    π_θ(a) = softmax(θ)_a = exp(θ_a) / Σ_b exp(θ_b)
    J(θ)   = E_{a∼π_θ}[ R(a) ] = Σ_a π_θ(a) μ_a                   (μ_a the mean reward of arm a)

The policy-gradient (score-function) identity gives an estimator from samples only:

    ∇_θ J = E_{a∼π_θ}[ (R − b) ∇_θ log π_θ(a) ],   ∇_θ log π_θ(a) = e_a − π_θ

for any baseline b that does not depend on a (it adds E[∇ log π]·b = 0). REINFORCE follows
that estimate; PPO (chapter 02) re-uses one batch for several epochs through
`ppo_core.losses.ppo_objective`, whose gradient at r(θ) = 1 equals REINFORCE's.

Everything is vectorised over S independent seeds: logits are `(S, A)`, a batch of actions
and rewards is `(S, B)`. Shapes: S seeds, B batch (pulls per update), A arms.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from .._runtime import torch_threads
from .._checks import as_tensor, non_negative, positive_finite
from ..kl_control import make_kl_controller
from ..losses import categorical_kl, entropy_from_logits, ppo_objective
from ..metrics import MetricsLog, is_diverged
from .run import Run
from .config import TrainerConfig, arg

__all__ = ["BernoulliBandit", "GaussianBandit", "make_bandit", "softmax_policy", "log_probs",
           "exact_kl", "entropy", "kl_regularised_optimum", "reinforce_loss", "score_function_gradients",
           "gradient_variance", "BanditPPOConfig", "train_bandit_ppo", "diverged"]


# ------------------------------------------------------------------ environments

@dataclass
class BernoulliBandit:
    """Arm a pays 1 with probability `probs[a]`, else 0. `probs`: `(A,)` in [0, 1]."""

    probs: torch.Tensor

    def __post_init__(self):
        self.probs = as_tensor(self.probs, "probs", torch.float32).flatten()
        if self.probs.numel() < 2 or not bool(((self.probs >= 0) & (self.probs <= 1)).all()):
            raise ValueError(f"probs must hold >= 2 values in [0, 1], got {self.probs.tolist()}")

    @property
    def means(self) -> torch.Tensor:
        """μ, `(A,)`."""
        return self.probs

    def pull(self, actions: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Rewards for integer `actions` of any shape (e.g. `(S, B)`), same shape, float."""
        p = self.probs[actions]
        return (torch.rand(p.shape, generator=generator) < p).float()


@dataclass
class GaussianBandit:
    """Arm a pays N(means[a], stds[a]²). `means`, `stds`: `(A,)`; a scalar std is shared."""

    means_: torch.Tensor
    stds: torch.Tensor | float = 1.0

    def __post_init__(self):
        self.means_ = as_tensor(self.means_, "means", torch.float32).flatten()
        if self.means_.numel() < 2 or not bool(torch.isfinite(self.means_).all()):
            raise ValueError(f"means must hold >= 2 finite values, got {self.means_.tolist()}")
        stds = as_tensor(self.stds, "stds", torch.float32).flatten()
        if stds.numel() == 1:
            stds = stds.expand_as(self.means_).clone()
        if stds.shape != self.means_.shape or not bool(((stds >= 0) & torch.isfinite(stds)).all()):
            raise ValueError(f"stds must be finite, >= 0, one per arm, got {stds.tolist()}")
        self.stds = stds

    @property
    def means(self) -> torch.Tensor:
        return self.means_

    def pull(self, actions: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mu, sd = self.means_[actions], self.stds[actions]
        return mu + sd * torch.randn(mu.shape, generator=generator)


def make_bandit(kind: str = "bernoulli", means=(0.2, 0.5, 0.8), stds=1.0):
    """`BernoulliBandit(means)` for kind "bernoulli", `GaussianBandit(means, stds)` for "gaussian"."""
    if kind == "bernoulli":
        return BernoulliBandit(torch.as_tensor(means, dtype=torch.float32))
    if kind == "gaussian":
        return GaussianBandit(torch.as_tensor(means, dtype=torch.float32), stds)
    raise ValueError(f"kind must be 'bernoulli' or 'gaussian', got {kind!r}")


# ------------------------------------------------------------------ the softmax policy

def softmax_policy(logits: torch.Tensor) -> torch.Tensor:
    """π_θ = softmax(θ) over the last axis: `(*, A)` -> `(*, A)`."""
    return torch.softmax(logits, dim=-1)


def log_probs(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log π_θ(a) for `logits` `(S, A)` and `actions` `(S, B)`: returns `(S, B)`."""
    return torch.log_softmax(logits, dim=-1).gather(-1, actions)


def exact_kl(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(p‖q) = Σ_a p(a) (log p(a) − log q(a)), exactly, over the last axis: `(*, A)` -> `(*)`.
    (`ppo_core.losses.categorical_kl`, under the name chapter 01 uses.)"""
    return categorical_kl(logits_p, logits_q)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """H(π_θ) = −Σ_a π(a) log π(a): `(*, A)` -> `(*)` (`ppo_core.losses.entropy_from_logits`)."""
    return entropy_from_logits(logits)


def kl_regularised_optimum(ref_logits: torch.Tensor, means: torch.Tensor, beta: float) -> torch.Tensor:
    """Logits of the policy that maximises  E_π[R] − β·KL(π‖π_ref)  on a bandit (chapter 02):

        π*(a) ∝ π_ref(a) · exp(μ_a / β)

    (β = 0: all mass on the best arm, returned as logits with a 60-nat gap).
    `ref_logits`, `means`: `(A,)`; returns `(A,)` logits (normalised: log π*).
    """
    beta = non_negative(beta, "beta")
    ref_logits = as_tensor(ref_logits, "ref_logits", torch.float32)
    means = as_tensor(means, "means", torch.float32)
    if beta == 0:
        return torch.log_softmax(60.0 * (means == means.max()).float(), -1)
    return torch.log_softmax(torch.log_softmax(ref_logits, -1) + means / beta, -1)


# ------------------------------------------------------------------ REINFORCE

def reinforce_loss(logp: torch.Tensor, rewards: torch.Tensor, baseline=None) -> torch.Tensor:
    """REINFORCE as a loss to minimise:  loss = −mean[ (R − b) · log π_θ(a) ].

    Its gradient is minus the score-function estimate of ∇J. Args: `logp` `(*)` log π_θ of
    the sampled arms (requires grad), `rewards` `(*)`, `baseline` b: None (b = 0), a number,
    or a tensor broadcastable to `rewards` (treated as a constant).
    """
    adv = rewards if baseline is None else rewards - torch.as_tensor(baseline).detach()
    return -(adv.detach() * logp).mean()


def score_function_gradients(logits: torch.Tensor, actions: torch.Tensor,
                             rewards: torch.Tensor, baseline: str = "none") -> torch.Tensor:
    """Per-batch REINFORCE gradient estimates of ∇_θ J, in closed form.

        ĝ = (1/B) Σ_i (R_i − b) (e_{a_i} − π_θ)

    Args:
        logits: `(A,)` θ, shared by all batches.
        actions, rewards: `(K, B)`: K independent batches of B pulls.
        baseline: "none" (b = 0), "mean" (b = the batch's mean reward, which uses R_i
            itself and so is very slightly biased: use "loo" for the unbiased version),
            or "loo" (leave-one-out mean of the other B − 1 rewards: unbiased).

    Returns: `(K, A)` one gradient estimate per batch.
    """
    A = logits.shape[-1]
    pi = softmax_policy(logits.detach())                                     # (A,)
    K, B = rewards.shape
    if baseline == "none":
        b = torch.zeros_like(rewards)
    elif baseline == "mean":
        b = rewards.mean(-1, keepdim=True).expand_as(rewards)
    elif baseline == "loo":
        if B < 2:
            raise ValueError(f"baseline='loo' needs a batch of at least 2, got B={B}")
        b = (rewards.sum(-1, keepdim=True) - rewards) / (B - 1)
    else:
        raise ValueError(f"baseline must be 'none', 'mean' or 'loo', got {baseline!r}")
    score = torch.nn.functional.one_hot(actions, A).float() - pi             # e_a − π, (K, B, A)
    return ((rewards - b).unsqueeze(-1) * score).mean(1)                      # (K, A)


def gradient_variance(bandit, logits, batch_size: int = 16, n_batches: int = 2000,
                      baseline: str = "none", seed: int = 0) -> dict:
    """Measure the variance of REINFORCE's gradient estimate at `logits` `(A,)`.

    Draws `n_batches` independent batches of `batch_size` pulls from π_θ and returns
    `{"variance": total variance tr Cov(ĝ), "mean": E[ĝ] (A,), "true": ∇J (A,),
    "bias_norm": ‖E[ĝ] − ∇J‖}`, where the exact gradient is ∇_θ J = π ⊙ (μ − π·μ).
    """
    logits = as_tensor(logits, "logits", torch.float32).flatten()
    if int(batch_size) < 1 or int(n_batches) < 2:
        raise ValueError(f"need batch_size >= 1 and n_batches >= 2, got {batch_size}, {n_batches}")
    g = torch.Generator().manual_seed(seed)
    pi = softmax_policy(logits)
    actions = torch.multinomial(pi, n_batches * batch_size, replacement=True,
                                generator=g).view(n_batches, batch_size)    # (K, B)
    rewards = bandit.pull(actions, g)                                        # (K, B)
    grads = score_function_gradients(logits, actions, rewards, baseline)     # (K, A)
    mu = bandit.means
    true = pi * (mu - (pi * mu).sum())                                       # ∇J exactly
    mean = grads.mean(0)
    return {"variance": float(grads.var(0).sum()), "mean": mean, "true": true,
            "bias_norm": float((mean - true).norm())}


# ------------------------------------------------------------------ bandit PPO

@dataclass
class BanditPPOConfig(TrainerConfig):
    """Bandit PPO (and, with update_epochs=1 and clip_eps=None, REINFORCE). One typed config."""

    updates: int = arg(40, "number of batches collected (one policy update of several epochs "
                           "each)")
    batch_size: int = arg(64, "B: arm pulls per batch")
    update_epochs: int = arg(4, "K: full-batch gradient steps on each batch (1 = an on-policy, "
                                "REINFORCE-like update)")
    lr: float = arg(0.5, "step size on the logits θ")
    optimizer: str = arg("sgd", "'sgd' (the step is lr × gradient, easy to reason about) or "
                                "'adam'")
    clip_eps: float | None = arg(0.2, "ε of the clipped surrogate; None switches the clip off")
    beta: float = arg(0.0, "β, the KL(π_θ‖π_ref) penalty coefficient (initial value when "
                           "kl_target is set)")
    kl_target: float | None = arg(None, "adaptive β (Ziegler et al. 2019) aiming at this KL to "
                                        "the reference; None = fixed β")
    kl_horizon: float = arg(10_000.0, "horizon of the adaptive controller, in samples")
    baseline: bool = arg(True, "advantage Â = R − mean batch reward (True) or Â = R (False)")
    ent_coef: float = arg(0.0, "entropy bonus c_H")
    n_seeds: int = arg(1, "S independent runs trained in parallel; records average over seeds "
                          "(with kl_target, one β is shared, driven by the seed-mean KL)")
    init_logits: tuple | None = arg(None, "θ_0 (= the reference π_ref); None = uniform")
    seed: int = arg(0, "random seed (rewards and sampled arms)")
    max_logit_gap: float = arg(60.0, "a run is stopped and marked diverged when, in any seed, "
                                     "max_a θ_a − min_a θ_a exceeds this (some arm's probability "
                                     "fell below e^−60 ≈ 1e−26 in one optimiser step: the logits "
                                     "exploded and π is numerically deterministic) or θ turns "
                                     "non-finite")

    def validate(self) -> None:
        for name in ("updates", "batch_size", "update_epochs", "n_seeds"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        positive_finite(self.lr, "lr")
        positive_finite(self.clip_eps, "clip_eps", allow_none=True)
        non_negative(self.beta, "beta")
        non_negative(self.ent_coef, "ent_coef")
        positive_finite(self.kl_horizon, "kl_horizon")
        positive_finite(self.max_logit_gap, "max_logit_gap")
        if self.kl_target is not None:
            positive_finite(self.kl_target, "kl_target")
            positive_finite(self.beta, "beta (the adaptive controller's start)")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.init_logits is not None and not all(math.isfinite(float(x))
                                                    for x in self.init_logits):
            raise ValueError(f"init_logits must hold finite numbers, got {self.init_logits!r}")

    def check_arms(self, n_arms: int) -> None:
        """`init_logits` must give one logit per arm of the bandit it trains on."""
        if self.init_logits is not None and len(self.init_logits) != n_arms:
            raise ValueError(f"init_logits must hold {n_arms} finite numbers (one per arm), "
                             f"got {self.init_logits!r}")


def diverged(records: list[dict]) -> bool:
    """True if the run recorded a divergence (`bandit/diverged`, `metrics.is_diverged`)."""
    return any(is_diverged(r) for r in records)


def _sgd_step(theta: torch.Tensor, grad: torch.Tensor, lr: float) -> None:
    """θ ← θ − lr · ∇loss  (= θ + lr · ∇J). Written out rather than `torch.optim.SGD`,
    whose first use imports torch._dynamo (seconds) for a five-number update."""
    with torch.no_grad():
        theta.sub_(lr * grad)


class _AdamStep:
    """Adam (Kingma & Ba 2015) with the usual β1 = 0.9, β2 = 0.999, ε = 1e−8, elementwise,
    so the S seeds stay independent."""

    def __init__(self, theta: torch.Tensor):
        self.m = torch.zeros_like(theta)
        self.v = torch.zeros_like(theta)
        self.t = 0

    def __call__(self, theta: torch.Tensor, grad: torch.Tensor, lr: float) -> None:
        self.t += 1
        with torch.no_grad():
            self.m.mul_(0.9).add_(0.1 * grad)
            self.v.mul_(0.999).add_(0.001 * grad * grad)
            m_hat = self.m / (1 - 0.9 ** self.t)
            v_hat = self.v / (1 - 0.999 ** self.t)
            theta.sub_(lr * m_hat / (v_hat.sqrt() + 1e-8))


def train_bandit_ppo(bandit, cfg: BanditPPOConfig = BanditPPOConfig(), log_path=None,
                     log: MetricsLog | None = None, overwrite: bool = False,
                     tensorboard_dir=None) -> list[dict]:
    """Train a softmax policy on `bandit` with PPO's composite objective; return the records.

    Per update (CleanRL's order): sample B arms from π_θ_old, pull them, Â = R − mean(R);
    then `update_epochs` full-batch steps on

        J(θ) = E[ min(r(θ)Â, clip(r(θ), 1−ε, 1+ε)Â) ] − β·KL(π_θ‖π_ref) (+ c_H·H(π_θ))

    through `ppo_core.losses.ppo_objective`, with the KL computed exactly over the A arms
    and passed as `kl=`; then β is updated (fixed or adaptive). π_ref is π_θ_0.

    Records (one dict per update, averaged over the S seeds; the README's keys):
        `iteration`, `charts/episodic_return` (mean reward of the batch),
        `charts/expected_reward` (Σ_a π(a)μ_a after the update), `losses/policy_loss`,
        `losses/approx_kl` (k1 estimate of KL(π_old‖π_θ) on the batch, from the last
        epoch's forward pass, i.e. before its step, as CleanRL logs it),
        `losses/clipfrac` (mean over epochs), `losses/entropy`, `objective/kl`
        (exact KL(π_new‖π_ref)), `objective/beta`, `bandit/kl_step` (exact
        KL(π_old‖π_new): how far this one update moved), `bandit/p_best` (π(best arm)),
        `bandit/frac_best` (fraction of seeds whose most likely arm is the best one),
        `bandit/probs` (π after the update, seed-mean, list of A), `bandit/diverged` (0/1),
        `perf/seconds`.
    A diverged run (θ non-finite or a logit gap > max_logit_gap) writes one last record with
    `bandit/diverged` = 1 and stops. `log_path` (or an open `log`) also writes JSONL; an existing log is
    replaced only with `overwrite=True`. `tensorboard_dir` also writes the records' numbers as
    TensorBoard scalars (step = `iteration`; not with an open `log`, which has its own).
    """
    if log is not None and tensorboard_dir is not None:
        raise ValueError("tensorboard_dir goes with log_path; an open `log` is given its own "
                         "(MetricsLog(..., tensorboard_dir=...))")
    with torch_threads(1):          # tiny tensors: extra threads only add synchronisation
        return _train(bandit, cfg, log_path, log, overwrite, tensorboard_dir)


def _train(bandit, cfg, log_path, log, overwrite=False, tensorboard_dir=None):
    A = int(bandit.means.numel())
    cfg.check_arms(A)
    S = cfg.n_seeds
    g = torch.Generator().manual_seed(cfg.seed)
    theta0 = (torch.zeros(A) if cfg.init_logits is None
              else torch.as_tensor(cfg.init_logits, dtype=torch.float32))
    ref_logits = theta0.expand(S, A).clone()                                 # π_ref, (S, A)
    theta = ref_logits.clone().requires_grad_(True)                          # θ, (S, A)
    step = _sgd_step if cfg.optimizer == "sgd" else _AdamStep(theta)
    kl_ctl = make_kl_controller(cfg.beta, cfg.kl_target, cfg.kl_horizon)
    best = int(bandit.means.argmax())
    if log is not None:                      # an open log from the caller: write into it
        _loop(bandit, cfg, log.write, theta, ref_logits, step, kl_ctl, best, g)
        return log.records
    run = Run(log_path, overwrite=overwrite, tensorboard_dir=tensorboard_dir, total=cfg.updates,
              desc="bandit PPO")
    with run:
        _loop(bandit, cfg, run.log_record, theta, ref_logits, step, kl_ctl, best, g,
              iterations=run.iterations(0, cfg.updates))
    return run.records


def _loop(bandit, cfg, write, theta, ref_logits, step, kl_ctl, best, g, iterations=None):
    """The updates, in CleanRL's order; `write(record)` logs each one. θ and π_ref `(S, A)`."""
    S, B = cfg.n_seeds, cfg.batch_size
    t0 = time.perf_counter()
    for it in (i - 1 for i in iterations) if iterations is not None else range(cfg.updates):
        # ---- roll out: B pulls per seed from π_θ_old
        with torch.no_grad():
            old_logits = theta.detach().clone()                          # (S, A)
            actions = torch.multinomial(softmax_policy(old_logits), B, replacement=True,
                                        generator=g)                     # (S, B)
            rewards = bandit.pull(actions, g)                            # (S, B)
            old_logp = log_probs(old_logits, actions)                    # (S, B)
            adv = rewards - rewards.mean(-1, keepdim=True) if cfg.baseline else rewards
        beta = kl_ctl.beta
        # ---- epochs of full-batch steps on the same batch
        clipfracs, bad = [], False
        for _ in range(cfg.update_epochs):
            logp = log_probs(theta, actions)                             # (S, B)
            kl_ref = exact_kl(theta, ref_logits)                          # (S,)
            ent = (entropy(theta).unsqueeze(-1).expand(S, B)             # (S, B)
                   if cfg.ent_coef > 0 else None)
            loss, stats = ppo_objective(
                logp, old_logp, adv, cfg.clip_eps, beta=beta,
                kl=kl_ref.unsqueeze(-1).expand(S, B), entropy=ent, ent_coef=cfg.ent_coef)
            # mean over (S, B) × S = Σ_s (seed s's own loss): each seed gets its own gradient
            (grad,) = torch.autograd.grad(loss * S, theta)
            step(theta, grad, cfg.lr)
            clipfracs.append(stats["clipfrac"])
            with torch.no_grad():
                gap = theta.max(-1).values - theta.min(-1).values      # (S,)
                if not bool(torch.isfinite(gap).all()) or float(gap.max()) > cfg.max_logit_gap:
                    bad = True
                    break
        if bad:
            write({"iteration": it, "bandit/diverged": 1,
                   "charts/episodic_return": float(rewards.mean()),
                   "objective/beta": beta, "perf/seconds": time.perf_counter() - t0})
            break
        # ---- statistics of the update, exact where the action set allows
        with torch.no_grad():
            new = theta.detach()
            pi = softmax_policy(new)                                     # (S, A)
            kl_now = float(exact_kl(new, ref_logits).mean())
            kl_ctl.update(kl_now, B)
            rec = {
                "iteration": it,
                "charts/episodic_return": float(rewards.mean()),
                "charts/expected_reward": float((pi * bandit.means).sum(-1).mean()),
                "losses/policy_loss": stats["policy_loss"],
                "losses/approx_kl": stats["approx_kl"],
                "losses/clipfrac": sum(clipfracs) / len(clipfracs),
                "losses/entropy": float(entropy(new).mean()),
                "objective/kl": kl_now,
                "objective/beta": beta,
                "bandit/kl_step": float(exact_kl(old_logits, new).mean()),
                "bandit/p_best": float(pi[:, best].mean()),
                "bandit/frac_best": float((pi.argmax(-1) == best).float().mean()),
                "bandit/probs": pi.mean(0).tolist(),
                "bandit/diverged": 0,
                "perf/seconds": time.perf_counter() - t0,
            }
        write(rec)
