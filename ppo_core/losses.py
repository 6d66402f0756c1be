"""PPO's losses as pure functions (introduced in chapter 02); clip-higher, the loss
aggregations of GRPO, DAPO and Dr. GRPO, and the DPO loss (chapter 07).

Every function takes tensors and returns a loss to *minimise* plus, where useful, a dict of
detached statistics (python floats). The same functions serve the bandit (ch. 01–02),
CartPole (ch. 03) and GPT-2 (ch. 04–05): there is no second copy for language models.

Notation (one vocabulary everywhere):
    logp      log π_θ(a|s)          the policy being optimised
    old_logp  log π_θ_old(a|s)      the policy that collected the samples
    ref_logp  log π_ref(a|s)        a frozen reference (the SFT model in RLHF)
    r(θ)      = exp(logp − old_logp) the probability *ratio* (not the reward r_t)
    Â         advantage estimate
    ε         clip range (clip_eps), usually 0.1 to 0.3; ε_low/ε_high when asymmetric
    β         KL coefficient (beta), usually 0.01 to 0.2 in RLHF

Shapes: any shape `(*)` shared by all per-sample inputs, e.g. `(B,)` for a bandit batch,
`(T*N,)` for CartPole minibatches, `(B, T)` for tokens with a `(B, T)` mask.

Precision and bad input: float16 and bfloat16 inputs are computed on in float32 (e^20 overflows
fp16), so losses and statistics come back float32 and finite; gradients still reach the
half-precision tensors. An empty input, a NaN, a mask that is all zeros or not binary raises
a `ValueError` naming the argument.
"""

from __future__ import annotations

import torch

from ._checks import (as_tensor, check_mask, finite_tensor, float32_at_least, non_empty,
                      non_negative, positive_finite, same_shape)
from .masking import _mean

__all__ = ["clipped_surrogate", "kl_estimate", "kl_penalty", "value_loss",
           "entropy_from_logits", "entropy_from_logp", "categorical_kl",
           "categorical_kl_from_logp", "ppo_objective", "surrogate_per_sample",
           "aggregate_loss", "dpo_loss", "LOSS_AGGS", "MAX_LOG_RATIO"]

#: Log-ratios are bounded to ±MAX_LOG_RATIO in the *value* used for exp(), with the gradient
#: passed straight through, so that a ratio of e^100 gives a finite loss and a finite,
#: restoring gradient instead of inf/NaN. e^20 ≈ 4.9e8 is far outside any trust region.
MAX_LOG_RATIO = 20.0


def _bounded(log_ratio: torch.Tensor) -> torch.Tensor:
    """`log_ratio` clamped to ±MAX_LOG_RATIO in value, identity in gradient."""
    return log_ratio + (log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO) - log_ratio).detach()


def _per_sample(name: str, x) -> torch.Tensor:
    """A finite float tensor, float32 at least (half-precision inputs are computed on in
    float32: e^MAX_LOG_RATIO overflows fp16; the cast keeps their gradient)."""
    t = finite_tensor(as_tensor(x, name), name)
    if not t.is_floating_point():
        t = t.float()
    return float32_at_least(t)


def _clip_bounds(eps: float, dtype: torch.dtype, centre: float = 1.0) -> tuple[float, float]:
    """(centre − ε, centre + ε) within the range of `dtype`: an ε beyond it (1e300) clips
    nothing, as it says, instead of failing to convert to float32."""
    big = float(torch.finfo(dtype).max)
    return max(centre - eps, -big), min(centre + eps, big)


def clipped_surrogate(logp, old_logp, advantages, clip_eps, mask=None, *, clip_eps_high=None,
                      loss_agg: str = "token-mean", loss_agg_norm=None):
    """PPO-Clip's surrogate, negated so that it is a loss to minimise.

        r(θ)    = exp(logp − old_logp)
        L^CLIP  = E[ min( r(θ)·Â , clip(r(θ), 1−ε_low, 1+ε_high)·Â ) ]
        loss    = −L^CLIP

    with ε_low = ε_high = ε (`clip_eps`) unless `clip_eps_high` is given: DAPO's
    "clip-higher" (Yu et al. 2025) raises ε_high only, so that a token the policy found rare
    (small π_old) may gain more probability before its gradient stops, which counters the
    collapse of entropy; ε_low stays, so probabilities still cannot be pushed down fast.

    For Â > 0 the objective stops rewarding r above 1+ε; for Â < 0 it stops rewarding r
    below 1−ε. Where the clipped branch is the minimum, the gradient is exactly zero. This
    removes the *incentive* to move r further; it does not bound r: one large step can
    still land far outside [1−ε, 1+ε], and nothing pulls it back.

    Args:
        logp: `(*)` log π_θ(a|s), requires grad.
        old_logp: `(*)` log π_θ_old(a|s) at sampling time (treated as a constant).
        advantages: `(*)` Â, treated as a constant.
        clip_eps: ε > 0 (ε_low when `clip_eps_high` is set); None switches clipping off
            (plain importance-sampled surrogate, for the "no constraint" experiments).
        mask: optional `(*)` 0/1 mask; statistics and the mean use unmasked entries only.
        clip_eps_high: ε_high > 0 for an asymmetric clip (None: ε_high = ε).
        loss_agg, loss_agg_norm: how the per-token objectives become one number
            (`aggregate_loss`; the default, "token-mean", is the masked mean).

    Returns:
        (loss, stats): loss a 0-dim tensor; stats floats `policy_loss`, `clipfrac`
        (fraction of samples where the clipped branch is the minimum, i.e. where the clip
        stops the gradient; CleanRL counts |r − 1| > ε instead, which also includes samples
        whose advantage sign makes the clip irrelevant), `approx_kl` (k1 mean of
        old_logp − logp), `approx_kl_k3` (mean of (r−1) − log r, ≥ 0), `ratio_mean`,
        `ratio_max`, `ratio_min`.
    """
    logp, old_logp, advantages, eps, m = _surrogate_inputs(logp, old_logp, advantages,
                                                           clip_eps, mask)
    eps = _clip_range(eps, clip_eps_high)
    _check_agg(loss_agg, loss_agg_norm, logp, m)
    loss, stats = _clipped_surrogate(logp, old_logp, advantages, eps, m, loss_agg, loss_agg_norm)
    return loss, _floats(stats)


def _clip_range(eps, clip_eps_high):
    """ε, or (ε_low, ε_high) when `clip_eps_high` is set (validated; needs the clip on)."""
    if clip_eps_high is None:
        return eps
    high = positive_finite(clip_eps_high, "clip_eps_high")
    if eps is None:
        raise ValueError("clip_eps_high needs clip_eps (ε_low); with clip_eps=None the clip is off")
    return (eps, high)


def _surrogate_inputs(logp, old_logp, advantages, clip_eps, mask):
    """Validate the inputs shared by `clipped_surrogate` and `ppo_objective`."""
    logp = non_empty(_per_sample("logp", logp), "logp")
    old_logp = _per_sample("old_logp", old_logp)
    advantages = _per_sample("advantages", advantages)
    same_shape("logp", logp, "old_logp", old_logp)
    same_shape("logp", logp, "advantages", advantages)
    eps = positive_finite(clip_eps, "clip_eps", allow_none=True)
    return logp, old_logp, advantages, eps, check_mask(mask, logp)


def surrogate_per_sample(ratio: torch.Tensor, advantages: torch.Tensor, eps):
    """The clipped surrogate of each sample, on validated tensors (any float dtype):

        objective = min(r·Â, clip(r, 1−ε, 1+ε)·Â)        (r·Â when ε is None)

    `eps` is ε, None, or a pair (ε_low, ε_high) for the asymmetric clip(r, 1−ε_low, 1+ε_high).

    Returns (objective `(*)`, clip_active `(*)` bool: where the clipped branch is the
    strictly smaller one, so the gradient through r is zero). The loss functions average
    it; chapter 02's figures plot it against r."""
    unclipped = ratio * advantages                                     # r(θ)·Â
    if eps is None:
        return unclipped, torch.zeros_like(ratio, dtype=torch.bool)
    low, high = eps if isinstance(eps, tuple) else (eps, eps)
    lo, hi = _clip_bounds(low, ratio.dtype)[0], _clip_bounds(high, ratio.dtype)[1]
    clipped = torch.clamp(ratio, lo, hi) * advantages               # clip(r, 1−ε_lo, 1+ε_hi)·Â
    return torch.minimum(unclipped, clipped), clipped < unclipped


def _clipped_surrogate(logp, old_logp, advantages, eps, m, loss_agg="token-mean",
                       loss_agg_norm=None):
    """The computation of `clipped_surrogate` on validated inputs; stats stay tensors."""
    log_ratio = logp - old_logp.detach()                               # log r(θ), (*)
    ratio = torch.exp(_bounded(log_ratio))                             # r(θ), (*)
    objective, clipped_active = surrogate_per_sample(ratio, advantages.detach(), eps)
    loss = -_aggregate(objective, m, loss_agg, loss_agg_norm)

    with torch.no_grad():
        lr = log_ratio.detach()
        r = ratio.detach()
        r_in = r[m] if m is not None else r
        stats = {
            "policy_loss": loss.detach(),
            "clipfrac": _mean(clipped_active.float(), m),
            "approx_kl": _mean(-lr, m),                                 # k1 of KL(π_old‖π_θ)
            "approx_kl_k3": _mean((r - 1.0) - _bounded(lr), m),         # k3, ≥ 0
            "ratio_mean": _mean(r, m),
            "ratio_max": r_in.max(),
            "ratio_min": r_in.min(),
        }
    return loss, stats


#: how per-token losses `(B, T)` become one number (verl's names; see `aggregate_loss`)
LOSS_AGGS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def aggregate_loss(values, mask=None, mode: str = "token-mean", norm=None) -> torch.Tensor:
    """Average per-token losses `(B, T)` over a batch of B sequences, one of three ways:

        token-mean:               Σ_b Σ_t m·x / Σ_b Σ_t m           every token weighs the same
                                  (DAPO's token-level loss, Yu et al. 2025; the course's PPO)
        seq-mean-token-mean:      1/B · Σ_b ( Σ_t m·x / Σ_t m )     every *sequence* weighs the
                                  same (GRPO's original 1/G Σ_i 1/|o_i| Σ_t, Shao et al. 2024)
        seq-mean-token-sum-norm:  1/B · Σ_b Σ_t m·x / norm          a constant divisor (Dr. GRPO,
                                  Liu et al. 2025; norm = T, the maximum length, by default)

    With seq-mean-token-mean a token of a long response weighs less than one of a short
    response: for a negative advantage, long wrong answers are penalised less per token,
    the length bias Dr. GRPO points out; a constant divisor removes it.

    Args:
        values: `(B, T)` per-token losses (or `(*)` for token-mean).
        mask: `(B, T)` response mask; every row needs a true entry for the seq-* modes.
        mode: one of `LOSS_AGGS`.
        norm: the constant divisor of seq-mean-token-sum-norm (None: T = values.shape[-1]).

    Returns: a 0-dim tensor.
    """
    values = _per_sample("values", values)
    m = check_mask(mask, values)
    _check_agg(mode, norm, values, m)
    return _aggregate(values, m, mode, norm)


def _check_agg(mode, norm, values: torch.Tensor, m) -> None:
    if mode not in LOSS_AGGS:
        raise ValueError(f"loss_agg must be one of {LOSS_AGGS}, got {mode!r}")
    if mode == "token-mean":
        return
    if values.dim() != 2:
        raise ValueError(f"loss_agg={mode!r} needs (B, T) per-token values, got shape "
                         f"{tuple(values.shape)}")
    if m is not None and not bool(m.any(dim=1).all()):
        raise ValueError(f"loss_agg={mode!r}: the mask has a sequence with no token")
    positive_finite(norm, "loss_agg_norm", allow_none=True)


def _aggregate(values: torch.Tensor, m, mode: str, norm) -> torch.Tensor:
    """`aggregate_loss` on validated inputs (`mode` checked by `_check_agg`)."""
    if mode == "token-mean":
        return _mean(values, m)                                        # Σ m·x / Σ m
    x = values if m is None else torch.where(m, values, values.new_zeros(()))
    per_seq = x.sum(dim=1)                                             # Σ_t m·x, (B,)
    if mode == "seq-mean-token-mean":
        count = (m.sum(dim=1) if m is not None
                 else torch.full_like(per_seq, values.shape[1]))
        return (per_seq / count).mean()                                # 1/B Σ_b mean_t
    return per_seq.mean() / float(norm if norm is not None else values.shape[1])


def dpo_loss(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, beta: float = 0.1):
    """Direct Preference Optimisation (Rafailov et al. 2023), on sequence log-probabilities.

        h    = β · [ (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l)) ]
        loss = −mean( log σ(h) )

    y_w is the chosen (preferred) response, y_l the rejected one, log π(y) = Σ_t log π(y_t|·)
    summed over the response. The implicit reward of a response is r̂(y) = β·(log π(y) −
    log π_ref(y)): DPO fits r̂ with the Bradley-Terry loss of a reward model, so the policy
    *is* the reward model, and the optimum of E[r̂] − β·KL(π‖π_ref) is π itself.

    Args:
        logp_chosen, logp_rejected: `(B,)` log π_θ of each pair's responses (with grad).
        ref_logp_chosen, ref_logp_rejected: `(B,)` log π_ref of the same (constants).
        beta: β > 0, the KL strength of the implicit objective (0.1 is TRL's default).

    Returns: (loss, stats) with floats `loss`, `reward_chosen` and `reward_rejected` (mean
    implicit rewards β·(log π − log π_ref)), `reward_margin` (mean of their difference),
    `reward_accuracy` (fraction of pairs whose chosen implicit reward is higher).
    """
    beta = positive_finite(beta, "beta")
    lc, lr = _per_sample("logp_chosen", logp_chosen), _per_sample("logp_rejected", logp_rejected)
    rc = _per_sample("ref_logp_chosen", ref_logp_chosen)
    rr = _per_sample("ref_logp_rejected", ref_logp_rejected)
    for name, t in (("logp_rejected", lr), ("ref_logp_chosen", rc), ("ref_logp_rejected", rr)):
        same_shape("logp_chosen", lc, name, t)
    if lc.dim() != 1 or lc.shape[0] == 0:
        raise ValueError(f"DPO needs (B,) sequence log-probs, got shape {tuple(lc.shape)}")
    reward_c = beta * (lc - rc.detach())                               # r̂(y_w)
    reward_r = beta * (lr - rr.detach())                               # r̂(y_l)
    loss = -torch.nn.functional.logsigmoid(reward_c - reward_r).mean()
    with torch.no_grad():
        stats = {"loss": loss.detach(), "reward_chosen": reward_c.mean(),
                 "reward_rejected": reward_r.mean(),
                 "reward_margin": (reward_c - reward_r).mean(),
                 "reward_accuracy": (reward_c > reward_r).float().mean()}
    return loss, _floats(stats)


def _floats(stats: dict) -> dict:
    """Tensor statistics to python floats with one conversion (one device sync)."""
    keys = [k for k, v in stats.items() if isinstance(v, torch.Tensor)]
    values = torch.stack([stats[k].float().reshape(()) for k in keys]).tolist() if keys else []
    out = dict(stats)
    out.update(zip(keys, values))
    return out


def kl_estimate(logp, ref_logp, kind: str = "k1") -> torch.Tensor:
    """Per-sample estimate of KL(π‖π_ref) from actions sampled from π.

    With log-ratio  d = ref_logp − logp = log(π_ref/π):
        k1 = −d                      unbiased, high variance, can be negative per sample
        k2 = ½ d²                    biased, low variance, ≥ 0
        k3 = (e^d − 1) − d           unbiased, low variance, ≥ 0   (Schulman 2020)

    All three are exactly 0 where the two log-probabilities are equal.

    Unbiased *values* are not unbiased *gradients*. Differentiated through logp with the
    samples held fixed (a KL term in the loss), on-policy, the expected gradients are
        k1:  0                                  (E_π[∇log π] = 0: no gradient at all)
        k2:  ∇ KL(π‖π_ref)                      (∇k2 = k1·∇log π, the score-function form)
        k3:  ∇ KL(π_ref‖π)                      (the *reverse* KL; GRPO's choice)
    while k1 used as a *reward* (RLHF: r_t = −β·k1_t), whose gradient the policy gradient
    E_π[k1·∇log π] carries, gives ∇ KL(π‖π_ref). Chapter 02 checks all four exactly.

    Args:
        logp: `(*)` log π(a|s) of the sampled actions.
        ref_logp: `(*)` log π_ref(a|s) of the same actions.
        kind: "k1", "k2" or "k3".

    Returns: `(*)` per-sample estimates (average them, with a mask, for the KL).
    """
    logp = _per_sample("logp", logp)
    return _kl_estimate(logp, _ref_logp_input(logp, ref_logp), kind)


def _ref_logp_input(logp: torch.Tensor, ref_logp) -> torch.Tensor:
    ref_logp = _per_sample("ref_logp", ref_logp)
    same_shape("logp", logp, "ref_logp", ref_logp)
    return ref_logp


def _kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str) -> torch.Tensor:
    """The computation of `kl_estimate` on validated tensors."""
    if kind not in ("k1", "k2", "k3"):
        raise ValueError(f"kind must be 'k1', 'k2' or 'k3', got {kind!r}")
    d = ref_logp - logp                                                # log(π_ref/π)
    if kind == "k1":
        return -d
    if kind == "k2":
        return 0.5 * d ** 2
    d = _bounded(d)
    return torch.expm1(d) - d                                          # (e^d − 1) − d ≥ 0


def kl_penalty(logp, ref_logp, beta, kind: str = "k2", mask=None) -> torch.Tensor:
    """β times the (masked) mean KL estimate: the soft penalty of the composite objective.

        penalty = β · mean_m( k(logp, ref_logp) )

    Returns a 0-dim tensor (a loss term to *add*). β ≥ 0. The default is k2 because this is
    a *loss* term: k2's gradient is ∇KL(π‖π_ref) on-policy, while k1's expected gradient is
    zero and k3's is that of the reverse KL(π_ref‖π) (see `kl_estimate`). These hold per
    state; over a sequence a loss term gives each token's KL gradient with its prefix held
    fixed, while k1 in the reward (γ = 1) gives the whole sequence's (chapter 02).
    """
    b = non_negative(beta, "beta")
    est = non_empty(kl_estimate(logp, ref_logp, kind), "logp")
    return b * _mean(est, check_mask(mask, est))


def value_loss(values, old_values, returns, clip_eps=None, mask=None):
    """Squared-error value loss, optionally clipped around the old values (PPO2 style).

        L^V = ½ · mean( (V − R)² )                                          unclipped
        L^V = ½ · mean( max( (V − R)², (V_old + clip(V − V_old, −ε_v, ε_v) − R)² ) )

    Args:
        values: `(*)` V_θ(s), requires grad.
        old_values: `(*)` V at sampling time (used only when clip_eps is set).
        returns: `(*)` regression targets R (e.g. Â + V_old from GAE).
        clip_eps: ε_v > 0 or None for the plain loss.
        mask: optional `(*)` mask.

    Returns: (loss, stats) with `value_loss`, `value_clipfrac`.
    """
    values, old_values, returns = _value_inputs(values, old_values, returns)
    eps = positive_finite(clip_eps, "clip_eps", allow_none=True)
    loss, stats = _value_loss(values, old_values, returns, eps, check_mask(mask, values))
    return loss, _floats(stats)


def _value_inputs(values, old_values, returns):
    """Validate the value-loss tensors (old_values None: the values themselves)."""
    values = non_empty(_per_sample("values", values), "values")
    returns = _per_sample("returns", returns)
    old_values = values if old_values is None else _per_sample("old_values", old_values)
    same_shape("values", values, "returns", returns)
    same_shape("values", values, "old_values", old_values)
    return values, old_values, returns


def _value_loss(values, old_values, returns, eps, m):
    """The computation of `value_loss` on validated inputs; stats stay tensors."""
    returns = returns.detach()
    err = (values - returns) ** 2                                      # (V − R)²
    if eps is None:
        per_sample = err
        clipfrac = values.new_zeros(())
    else:
        old = old_values.detach()
        lo, hi = _clip_bounds(eps, values.dtype, centre=0.0)           # (−ε_v, ε_v), in range
        v_clipped = old + torch.clamp(values - old, lo, hi)            # V_old + clip(V − V_old)
        err_clipped = (v_clipped - returns) ** 2
        per_sample = torch.maximum(err, err_clipped)
        clipfrac = _mean((err_clipped > err).float(), m)
    loss = 0.5 * _mean(per_sample, m)
    return loss, {"value_loss": loss.detach(), "value_clipfrac": clipfrac.detach()}


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution defined by the last axis of `logits`.

        H(π) = −Σ_a π(a) log π(a),   π = softmax(logits)

    Args: logits `(*, A)` (A actions, or V vocabulary entries).
    Returns: `(*)` entropies in nats, computed stably from log-softmax.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() < 1:
        raise ValueError("logits must be a tensor with an action axis last")
    finite_tensor(logits, "logits")
    return entropy_from_logp(torch.log_softmax(logits.float(), dim=-1))


def entropy_from_logp(logp_all: torch.Tensor) -> torch.Tensor:
    """`entropy_from_logits` from log-probabilities `(*, A)` the caller already has."""
    return -(logp_all.exp() * logp_all).sum(dim=-1)


def categorical_kl(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """Exact KL(p‖q) between the categorical distributions that two sets of logits define,
    for small action sets where the sum over actions is cheap (bandit, CartPole).

        KL(p‖q) = Σ_a p(a) (log p(a) − log q(a)),   p = softmax(logits_p), q = softmax(logits_q)

    Args: logits_p, logits_q `(*, A)`. Returns `(*)`, ≥ 0.
    """
    if not isinstance(logits_p, torch.Tensor) or not isinstance(logits_q, torch.Tensor):
        raise ValueError("logits_p and logits_q must be tensors with the action axis last")
    same_shape("logits_p", logits_p, "logits_q", logits_q)
    lp = torch.log_softmax(finite_tensor(logits_p, "logits_p").float(), dim=-1)
    lq = torch.log_softmax(finite_tensor(logits_q, "logits_q").float(), dim=-1)
    return categorical_kl_from_logp(lp, lq)


def categorical_kl_from_logp(logp_p: torch.Tensor, logp_q: torch.Tensor) -> torch.Tensor:
    """`categorical_kl` from log-probabilities `(*, A)` the caller already has."""
    return (logp_p.exp() * (logp_p - logp_q)).sum(dim=-1)


def ppo_objective(logp, old_logp, advantages, clip_eps=0.2, *, mask=None,
                  ref_logp=None, beta=0.0, kl_kind: str = "k2", kl=None,
                  values=None, old_values=None, returns=None, value_clip_eps=None,
                  vf_coef: float = 0.5, entropy=None, ent_coef: float = 0.0,
                  clip_eps_high=None, loss_agg: str = "token-mean", loss_agg_norm=None):
    """The course's composite PPO objective, as one loss to minimise.

        J(θ)  = E[ min(r·Â, clip(r, 1−ε, 1+ε)·Â) ]  −  β·KL(π_θ‖π_ref)
        loss  = −J(θ)  +  c_v·L^V  −  c_H·H(π_θ)

    The clip removes, per sample, the incentive to push r(θ) beyond [1−ε, 1+ε] (it does not
    bound r); the KL term is a soft cost, over all samples, on drifting from π_ref. Chapter
    02 shows why PPO for language models uses both.

    Every trainer calls this function, with different terms switched on:
        bandit (ch. 01–02): β·KL with the KL exact over the arms (`kl=`);
        CartPole (ch. 03):  β = 0 by default (clip, value loss, entropy); with β > 0 the exact
                            KL over the actions, to π_old or to the initial policy (`kl=`);
        RLHF (ch. 05):      β = 0 here: the KL is in the per-token *reward*, r_t = −β·k1_t
                            (`ppo_core.trainers.rlhf.token_rewards`), so it reaches the policy through
                            the advantages; with `kl_in="loss"` (ch. 07, GRPO's placement)
                            β·KL is this loss term instead, with k3 or k2.

    Args:
        logp, old_logp, advantages, clip_eps, mask: as in `clipped_surrogate`
            (clip_eps=None turns the clip off).
        ref_logp: `(*)` log π_ref of the sampled actions; with β > 0 the penalty uses the
            `kl_kind` estimator on these samples.
        beta: β ≥ 0. With β = 0 no reference is needed.
        kl_kind: "k2" (default), "k1" or "k3". The estimate is differentiated as a loss
            term, samples held fixed, so its *gradient* is what matters: k2 gives
            ∇KL(π_θ‖π_ref) on-policy; k1 gives zero in expectation; k3 (GRPO's choice) gives
            ∇KL(π_ref‖π_θ), the reverse direction, though its value is unbiased for
            KL(π_θ‖π_ref). With β = 0 it only sets how `kl_ref` is measured (k2 is then
            biased: ½·E[d²], close to the KL only while π_θ is close to π_ref).
        kl: optional `(*)` per-sample KL(π_θ‖π_ref) computed exactly (e.g. summed over a
            small action set); used instead of the estimator when given.
        values, old_values, returns, value_clip_eps, vf_coef: the value loss (optional).
        entropy: optional `(*)` per-sample entropy H(π_θ(·|s)); ent_coef its bonus c_H.
        clip_eps_high: ε_high for the asymmetric clip ("clip-higher"; None: ε).
        loss_agg, loss_agg_norm: how the surrogate, the KL term and the entropy bonus are
            averaged over `(B, T)` tokens (`aggregate_loss`; default the masked token mean).
            The value loss and the statistics stay token means.

    Returns:
        (loss, stats): stats holds everything `clipped_surrogate` reports plus `kl_ref`
        (mean KL to the reference, 0 when there is none), `kl_penalty` (β·KL), `beta`,
        `entropy`, `value_loss`, `value_clipfrac` where they apply, and `loss`.
    """
    beta = non_negative(beta, "beta")
    vf_coef = non_negative(vf_coef, "vf_coef")
    ent_coef = non_negative(ent_coef, "ent_coef")
    logp, old_logp, advantages, eps, m = _surrogate_inputs(logp, old_logp, advantages,
                                                           clip_eps, mask)
    eps = _clip_range(eps, clip_eps_high)
    _check_agg(loss_agg, loss_agg_norm, logp, m)
    loss, stats = _clipped_surrogate(logp, old_logp, advantages, eps, m, loss_agg, loss_agg_norm)

    def agg(x, token_mean):                       # the loss term: aggregated like the surrogate
        return token_mean if loss_agg == "token-mean" else _aggregate(x, m, loss_agg, loss_agg_norm)

    if kl is not None:
        kl_t = _per_sample("kl", kl)
        same_shape("logp", logp, "kl", kl_t)
    elif ref_logp is not None:                    # logp is validated already
        kl_t = _kl_estimate(logp, _ref_logp_input(logp, ref_logp), kl_kind)
    elif beta > 0:
        raise ValueError("beta > 0 needs ref_logp (or an exact per-sample kl)")
    else:
        kl_t = None
    kl_mean = _mean(kl_t, m) if kl_t is not None else logp.new_zeros(())
    if beta > 0:
        loss = loss + beta * agg(kl_t, kl_mean)                        # − (−β·KL)
    stats["kl_ref"] = kl_mean.detach()
    stats["kl_penalty"] = beta * kl_mean.detach()
    stats["beta"] = beta

    if values is not None:
        if returns is None:
            raise ValueError("values given without returns: the value loss needs both")
        values, old_values, returns = _value_inputs(values, old_values, returns)
        v_eps = positive_finite(value_clip_eps, "value_clip_eps", allow_none=True)
        vl, vstats = _value_loss(values, old_values, returns, v_eps, check_mask(mask, values))
        loss = loss + vf_coef * vl
        stats.update(vstats)
    if entropy is not None:
        ent = _per_sample("entropy", entropy)
        same_shape("logp", logp, "entropy", ent)
        ent_mean = _mean(ent, m)
        loss = loss - ent_coef * agg(ent, ent_mean)
        stats["entropy"] = ent_mean.detach()
    stats["loss"] = loss.detach()
    return loss, _floats(stats)
