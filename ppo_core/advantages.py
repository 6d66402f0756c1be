"""Returns and Generalised Advantage Estimation (introduced in chapter 03); the group
baselines of GRPO, Dr. GRPO and RLOO (chapter 07).

Everything is time-major: `(T, N)` = T steps of N parallel environments (for tokens,
T response tokens of N sequences). Inputs may be numpy arrays or tensors; outputs are
tensors (arrays and lists become float32; tensors keep their dtype and device).

Episode bookkeeping, the part that is easy to get wrong:

* `dones[t] = 1` means the episode **terminated** at step t (the pole fell, the EOS was
  emitted): there is no future, so nothing is bootstrapped across it, V(s_{t+1}) = 0.
* `truncated[t] = 1` means the episode was **cut** at step t by a time limit: the state
  s_{t+1} still had a future, so its value is bootstrapped from `final_values[t]`
  (= V(s_{t+1}) of the state the environment reached before it reset), but the advantage
  recursion still stops there, because step t+1 of the array belongs to a new episode.
* Steps with neither flag continue into step t+1; after the last step, `last_value`
  (= V(s_T), shape `(N,)`) is bootstrapped.

The group baselines need no critic: each prompt is sampled G times, and a response's score
is compared with the other scores *of the same prompt*. Their inputs are `(B,)` sequence
scores with B = (number of prompts) × G, each group of G contiguous (prompt 0's G samples,
then prompt 1's, ...: what `torch.repeat_interleave(prompts, G)` gives).
"""

from __future__ import annotations

import torch

from ._checks import as_tensor, finite_tensor, unit_interval
from .masking import masked_whiten

__all__ = ["discounted_returns", "gae", "whiten", "explained_variance", "group_advantages",
           "rloo_advantages", "GROUP_STD_EPS"]


def _time_major(name, x, shape=None, dtype=None):
    t = finite_tensor(as_tensor(x, name), name)
    if dtype is not None:
        t = t.to(dtype)
    elif not t.is_floating_point():
        t = t.float()
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    return t


def _flags(name, x, shape, like):
    if x is None:
        return torch.zeros(shape, dtype=like.dtype, device=like.device)
    t = _time_major(name, x, shape).to(device=like.device, dtype=like.dtype)
    if bool(((t != 0) & (t != 1)).any()):
        raise ValueError(f"{name} must hold only 0 and 1, got values {t.unique()[:5].tolist()}")
    return t


def discounted_returns(rewards, dones=None, gamma: float = 0.99, last_value=None):
    """Discounted return of every step, by the backward recursion

        G_t = r_t + γ · (1 − done_t) · G_{t+1},     G_T = last_value (0 if None)

    Args:
        rewards: `(T, N)` (or `(T,)`) rewards r_t.
        dones: same shape, 1 where the episode terminated at step t.
        gamma: discount γ in [0, 1].
        last_value: `(N,)` bootstrap value for the step after the last one.

    Returns: `(T, N)` returns G_t.
    """
    gamma = unit_interval(gamma, "gamma")
    r = _time_major("rewards", rewards)
    if r.dim() == 0:
        raise ValueError("rewards must have a time axis, got a scalar")
    d = _flags("dones", dones, tuple(r.shape), r)
    nxt = (torch.zeros(r.shape[1:], dtype=r.dtype, device=r.device) if last_value is None
           else _time_major("last_value", last_value, tuple(r.shape[1:])).to(r))
    out = torch.empty_like(r)
    for t in reversed(range(r.shape[0])):
        nxt = r[t] + gamma * (1.0 - d[t]) * nxt
        out[t] = nxt
    return out


def gae(rewards, values, dones, last_value, gamma: float = 0.99, lam: float = 0.95,
        truncated=None, final_values=None):
    """Generalised Advantage Estimation (Schulman et al. 2016).

        δ_t = r_t + γ · V_next(t) − V(s_t)
        Â_t = δ_t + γλ · (1 − end_t) · Â_{t+1}
        R_t = Â_t + V(s_t)                          (the value-function target)

    where V_next(t) is 0 if the episode terminated at t (`dones[t]`), `final_values[t]`
    if it was truncated at t, V(s_{t+1}) = values[t+1] otherwise (`last_value` after the
    last step), and end_t = dones[t] or truncated[t]. λ = 1 gives Monte-Carlo returns minus
    values; λ = 0 gives the one-step TD error δ_t.

    Args:
        rewards: `(T, N)` rewards r_t (or `(T,)` for one environment, with `()` last_value).
        values: `(T, N)` V(s_t) at sampling time.
        dones: `(T, N)` 1 where the episode terminated at step t.
        last_value: `(N,)` V(s_T), the state after the last step.
        gamma: discount γ in [0, 1] (0.99 for CartPole, 1.0 for tokens).
        lam: GAE λ in [0, 1] (0.95 usual).
        truncated: optional `(T, N)`, 1 where a time limit cut the episode at step t.
        final_values: `(T, N)` V(s_{t+1}) of the pre-reset state, read where truncated.

    Returns: (advantages, returns), both `(T, N)`, detached.
    """
    gamma = unit_interval(gamma, "gamma")
    lam = unit_interval(lam, "lam")
    r = _time_major("rewards", rewards)
    if r.dim() not in (1, 2):
        raise ValueError(f"rewards must be (T, N) or (T,), got shape {tuple(r.shape)}")
    shape = tuple(r.shape)
    v = _time_major("values", values, shape).to(r)
    d = _flags("dones", dones, shape, r)
    trunc = _flags("truncated", truncated, shape, r)
    if bool(trunc.any()) and final_values is None:
        raise ValueError("truncated steps need final_values (V of the state before reset)")
    fv = (torch.zeros_like(r) if final_values is None
          else _time_major("final_values", final_values, shape).to(r))
    lv = _time_major("last_value", last_value, shape[1:]).to(r)

    with torch.no_grad():
        next_v = torch.cat([v[1:], lv[None]], dim=0)                   # V(s_{t+1}) in the array
        next_v = torch.where(trunc.bool(), fv, next_v)                  # truncated: pre-reset state
        next_v = next_v * (1.0 - d)                                     # terminated: no future
        delta = r + gamma * next_v - v                                  # δ_t
        cont = (1.0 - torch.clamp(d + trunc, max=1.0))                 # 0 where an episode ended
        adv = torch.empty_like(r)
        running = torch.zeros_like(lv)
        for t in reversed(range(shape[0])):
            running = delta[t] + gamma * lam * cont[t] * running        # Â_t
            adv[t] = running
        ret = adv + v                                                   # R_t = Â_t + V(s_t)
    return adv, ret


def whiten(x, mask=None, shift_mean: bool = True):
    """Standardise advantages: (x − mean) / std over the (masked) batch.

    With `shift_mean=False` only the scale changes. Same shape as `x`.
    """
    return masked_whiten(x, mask, shift_mean=shift_mean)


def explained_variance(returns, values) -> float:
    """How much of the returns' spread the critic explains: 1 − Var(R − V) / Var(R), over
    the given (already masked) elements. 1 is perfect, 0 no better than a constant, < 0
    worse; 0 when the returns have no spread (one element, all equal)."""
    returns = torch.as_tensor(returns, dtype=torch.float32).flatten()
    values = torch.as_tensor(values, dtype=torch.float32).flatten()
    var = torch.var(returns, unbiased=False)
    if float(var) <= 0:
        return 0.0
    return float(1 - torch.var(returns - values, unbiased=False) / var)


#: added to the group's standard deviation in GRPO's normalisation (TRL's value), so that a
#: group whose G scores are all equal gets advantages 0 instead of 0/0
GROUP_STD_EPS = 1e-4


def _groups(scores, group_size: int) -> torch.Tensor:
    """`(B,)` scores as `(B/G, G)` groups (validated: G ≥ 2 divides B, finite)."""
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2:
        raise ValueError(f"group_size must be an int >= 2 (a baseline needs other samples of "
                         f"the same prompt), got {group_size!r}")
    s = _time_major("scores", scores)
    if s.dim() != 1:
        raise ValueError(f"scores must be (B,) sequence scores, got shape {tuple(s.shape)}")
    if s.shape[0] == 0 or s.shape[0] % group_size:
        raise ValueError(f"the number of scores ({s.shape[0]}) must be a positive multiple of "
                         f"group_size={group_size}")
    return s.reshape(-1, group_size)


def group_advantages(scores, group_size: int, scale_by_std: bool = True,
                     eps: float = GROUP_STD_EPS) -> torch.Tensor:
    """GRPO's group-normalised advantage (Shao et al. 2024, DeepSeekMath, §4.1.2), or Dr.
    GRPO's without the division (Liu et al. 2025, "Understanding R1-Zero-Like Training").

    For the G responses y_1..y_G sampled for one prompt, with sequence scores R_1..R_G:

        GRPO:      Â_i = (R_i − mean(R_1..R_G)) / (std(R_1..R_G) + eps)
        Dr. GRPO:  Â_i =  R_i − mean(R_1..R_G)                    (scale_by_std=False)

    std is the sample standard deviation (Bessel's G − 1, as TRL computes it). Dividing by it
    gives prompts whose responses all score alike (too easy, too hard) the same weight as
    the others, a bias Dr. GRPO removes. Every token of response i gets Â_i.

    Args:
        scores: `(B,)` sequence scores, B = n_prompts × G, groups of G contiguous.
        group_size: G ≥ 2.
        scale_by_std: divide by the group's std (GRPO) or not (Dr. GRPO).
        eps: added to the std (a group of equal scores gets 0, not 0/0).

    Returns: `(B,)` advantages; each group's sum to 0.
    """
    g = _groups(scores, group_size)                                     # (B/G, G)
    centred = g - g.mean(dim=1, keepdim=True)                           # R_i − mean
    if scale_by_std:
        centred = centred / (g.std(dim=1, keepdim=True) + eps)          # / (std + eps)
    return centred.reshape(-1)


def rloo_advantages(scores, group_size: int) -> torch.Tensor:
    """The REINFORCE leave-one-out advantage (Kool et al. 2019, "Buy 4 REINFORCE samples, get
    a baseline for free!"; Ahmadian et al. 2024, "Back to Basics", RLOO).

    Each response's baseline is the mean score of the *other* G − 1 responses to the same
    prompt, which does not depend on the response itself, so the policy gradient stays
    unbiased:

        Â_i = R_i − 1/(G−1) · Σ_{j≠i} R_j  =  G/(G−1) · (R_i − mean(R_1..R_G))

    Args:
        scores: `(B,)` sequence scores, B = n_prompts × G, groups of G contiguous.
        group_size: G ≥ 2.

    Returns: `(B,)` advantages; each group's sum to 0.
    """
    g = _groups(scores, group_size)                                     # (B/G, G)
    others = (g.sum(dim=1, keepdim=True) - g) / (group_size - 1)        # mean of the others
    return (g - others).reshape(-1)
