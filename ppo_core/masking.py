"""Masked statistics and token log-probabilities (introduced in chapter 04).

A language-model batch is a rectangle `(B, T)` in which only some entries are real
response tokens; the others are prompt or padding. Every average in token-level PPO is
therefore a *masked* average. Padded entries are ignored with `torch.where`, never by
multiplying with zero, so that whatever value sits in a padded slot (1e9, a stale logit)
cannot leak into the result.

Shapes: `B` batch, `T` tokens, `V` vocabulary.
"""

from __future__ import annotations

import torch

from ._checks import as_tensor, check_mask, finite_tensor, float32_at_least, non_empty

__all__ = ["masked_mean", "masked_var", "masked_whiten", "logprobs_from_logits",
           "position_ids_from_mask"]


def masked_mean(values, mask=None, axis=None) -> torch.Tensor:
    """Mean of `values` over the entries where `mask` is true.

        mean_m(x) = Σ_i m_i x_i / Σ_i m_i

    Args:
        values: tensor of any shape, e.g. `(B, T)` per-token losses.
        mask: same shape as `values`, 1/True for entries that count; None means all count.
        axis: reduce over this dimension only (None: over everything).

    Returns: a 0-dim tensor (axis=None) or `values` reduced along `axis`, in the dtype of
    `values` (half precision is summed in float32: an fp16 sum overflows at 65504).
    Raises ValueError on empty values, an all-zero or non-binary mask, a shape mismatch, or
    non-finite values.
    """
    values = finite_tensor(as_tensor(values, "values"), "values")
    non_empty(values, "values", dim=axis)
    mask = check_mask(mask, values)
    dtype, values = _compute_dtype(values)
    if mask is None:
        out = values.mean() if axis is None else values.mean(dim=axis)
        return out.to(dtype)
    zeros = torch.zeros((), dtype=values.dtype, device=values.device)
    total = torch.where(mask, values, zeros)
    if axis is None:
        return (total.sum() / mask.sum()).to(dtype)
    count = mask.sum(dim=axis)
    if bool((count == 0).any()):
        raise ValueError(f"mask has a row with no true entry along axis={axis}")
    return (total.sum(dim=axis) / count).to(dtype)


def _compute_dtype(values: torch.Tensor) -> tuple[torch.dtype, torch.Tensor]:
    """(dtype of the result, `values` to compute with): integers become float32; half
    precision is computed in float32 and the result cast back to it."""
    if not values.is_floating_point():
        values = values.float()
    return values.dtype, float32_at_least(values)


def _mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """`masked_mean` without input checks, for callers that validated already
    (`mask` a bool tensor of `values`' shape with at least one true entry, or None)."""
    if mask is None:
        return values.mean()
    return torch.where(mask, values, values.new_zeros(())).sum() / mask.sum()


def masked_var(values, mask=None, unbiased: bool = True) -> torch.Tensor:
    """Variance of the masked entries of `values` (a 0-dim tensor).

        var_m(x) = Σ_i m_i (x_i − mean_m(x))² / (Σ_i m_i − 1)     (unbiased)

    Raises ValueError if `unbiased` and fewer than two entries are unmasked. Half precision
    is computed in float32 and returned in its own dtype.
    """
    values = non_empty(finite_tensor(as_tensor(values, "values"), "values"), "values")
    mask = check_mask(mask, values)
    dtype, values = _compute_dtype(values)
    if mask is None:
        mask = torch.ones_like(values, dtype=torch.bool)
    n = mask.sum()
    if unbiased and int(n) < 2:
        raise ValueError("masked_var(unbiased=True) needs at least two unmasked entries, got 1")
    mean = masked_mean(values, mask)
    centred = torch.where(mask, values - mean, torch.zeros((), dtype=values.dtype, device=values.device))
    var = (centred ** 2).sum() / (n - 1 if unbiased else n)
    return var.to(dtype)


def masked_whiten(values, mask=None, shift_mean: bool = True, eps: float = 1e-8,
                  moments: tuple[float, float] | None = None) -> torch.Tensor:
    """Normalise the masked entries to unit variance (and zero mean if `shift_mean`).

        x̂_i = (x_i − mean_m(x)) / sqrt(var_m(x) + eps)

    With `shift_mean=False` the mean is added back: only the scale changes, which is what
    RLHF trainers do to rewards. Unmasked entries are returned unchanged. Same shape and dtype
    as the input (half precision is computed in float32). `moments`: (mean, unbiased
    variance) to use instead of this tensor's own, e.g. those of every process's entries.
    """
    values = non_empty(finite_tensor(as_tensor(values, "values"), "values"), "values")
    mask_b = check_mask(mask, values)
    dtype, values = _compute_dtype(values)
    if mask_b is None:
        mask_b = torch.ones_like(values, dtype=torch.bool)
    if moments is None:
        n = int(mask_b.sum())
        mean = masked_mean(values, mask_b)
        var = masked_var(values, mask_b, unbiased=n > 1)
    else:
        mean, var = (torch.as_tensor(m, dtype=values.dtype, device=values.device) for m in moments)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask_b, whitened, values).to(dtype)


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor, with_entropy: bool = False):
    """Log-probability of each chosen token under the distribution its logits define
    (and, with `with_entropy`, the entropy of that distribution, from the same
    log-softmax: one pass over the `(B, T, V)` logits instead of two).

        out[b, t] = log softmax(logits[b, t])[tokens[b, t]]

    Args:
        logits: `(B, T, V)`, already aligned with `tokens`. For a causal LM, the logits
            at position t score the token at t+1, so callers pass `logits[:, :-1]` with
            `tokens = input_ids[:, 1:]`.
        tokens: `(B, T)` integer token ids in [0, V).

    Returns: `(B, T)` log-probabilities in the dtype of `logits` (float32 at least); with
    `with_entropy`, `(logp, entropy)` where entropy[b, t] = −Σ_v π(v) log π(v) (nats).
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        raise ValueError(f"logits must be a (B, T, V) tensor, got shape "
                         f"{tuple(getattr(logits, 'shape', ()))}")
    tokens = as_tensor(tokens, "tokens", dtype=torch.long) if not isinstance(tokens, torch.Tensor) else tokens
    if tokens.shape != logits.shape[:2]:
        raise ValueError(f"tokens must have shape {tuple(logits.shape[:2])} to match logits "
                         f"{tuple(logits.shape)}, got {tuple(tokens.shape)}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= logits.shape[-1]):
        raise ValueError(f"tokens must lie in [0, {logits.shape[-1]}), got range "
                         f"[{int(tokens.min())}, {int(tokens.max())}]")
    finite_tensor(logits, "logits")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    logp = torch.log_softmax(logits, dim=-1)                           # (B, T, V)
    chosen = torch.gather(logp, -1, tokens.long().unsqueeze(-1)).squeeze(-1)   # (B, T)
    if not with_entropy:
        return chosen
    return chosen, -(logp.exp() * logp).sum(dim=-1)                    # (B, T), (B, T)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids for a left-padded batch: the first real token gets position 0.

        pos[b, t] = (Σ_{s≤t} mask[b, s]) − 1,  and 0 on padding (any value there is masked)

    Args: attention_mask `(B, T)` of 0/1.
    Returns: `(B, T)` long tensor.
    """
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be a (B, T) tensor, got "
                         f"{type(attention_mask).__name__} of shape "
                         f"{tuple(getattr(attention_mask, 'shape', ()))}")
    mask = attention_mask.long()
    pos = mask.cumsum(dim=-1) - 1
    return pos.clamp(min=0).masked_fill(mask == 0, 0)
