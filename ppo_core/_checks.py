"""Input checks shared by every module: bad input raises a ValueError that names the
argument and the value it got, instead of turning into a silent NaN three cells later."""

from __future__ import annotations

import math

import torch


class NonFiniteError(ValueError):
    """A tensor holds NaN or ±inf. A `ValueError` (bad input to a function), and the type by
    which the trainers recognise divergence (`ppo_core.trainers.run`), never by its message."""


def as_tensor(x, name: str, dtype=None) -> torch.Tensor:
    """Convert arrays, lists and scalars to a tensor; tensors pass through unchanged."""
    if isinstance(x, torch.Tensor):
        return x if dtype is None else x.to(dtype)
    try:
        return torch.as_tensor(x, dtype=dtype if dtype is not None else torch.float32)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{name} must be a tensor or array of numbers, got {type(x).__name__}: {e}") from None


def finite_tensor(x: torch.Tensor, name: str) -> torch.Tensor:
    """Raise if any entry of `x` is NaN or infinite; return `x`.

    Fast path: the sum of the entries is finite whenever every entry is (NaN and inf
    propagate), so one reduction usually settles it; only a non-finite sum (a bad entry,
    or an overflow of large finite ones) pays for the element-wise check."""
    if not x.is_floating_point() or x.numel() == 0 or math.isfinite(float(x.detach().sum())):
        return x
    if not bool(torch.isfinite(x).all()):
        bad = x[~torch.isfinite(x)].flatten()[:3].tolist()
        n_bad = int((~torch.isfinite(x)).sum())
        raise NonFiniteError(f"{name} contains {n_bad} non-finite value(s) (e.g. {bad}); "
                         f"check the step that produced it")
    return x


def non_empty(x: torch.Tensor, name: str, dim: int | None = None) -> torch.Tensor:
    """Raise if `x` has no entry to average over (along `dim`, or at all); return `x`.
    An average over nothing is NaN, a max over nothing a RuntimeError: say so instead."""
    empty = x.numel() == 0 if dim is None else x.shape[dim] == 0
    if empty:
        where = "" if dim is None else f" along axis={dim}"
        raise ValueError(f"{name} is empty{where} (shape {tuple(x.shape)}): there is no entry "
                         f"to average over")
    return x


def float32_at_least(x: torch.Tensor) -> torch.Tensor:
    """`x` in float32 when it is float16 or bfloat16 (else unchanged): the losses compute in
    float32, because fp16 overflows at 65504 (e^11) and bf16 keeps 3 significant digits. The
    cast is differentiable, so gradients still reach a half-precision input."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def same_shape(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")


def check_mask(mask, like: torch.Tensor, name: str = "mask") -> torch.Tensor | None:
    """Return `mask` as a bool tensor of `like`'s shape, or None; refuse an all-zero mask."""
    if mask is None:
        return None
    mask = as_tensor(mask, name)
    if mask.shape != like.shape:
        raise ValueError(f"{name} must have shape {tuple(like.shape)}, got {tuple(mask.shape)}")
    mask = mask.to(device=like.device)
    if mask.dtype != torch.bool:
        finite_tensor(mask.float(), name)
        other = mask[(mask != 0) & (mask != 1)]
        if other.numel():
            raise ValueError(f"{name} must be binary (bool, or 0/1 numbers), got values such as "
                             f"{other.unique()[:3].tolist()}; a weighted average is not a mask")
        mask = mask != 0
    if not bool(mask.any()):
        raise ValueError(f"{name} is all zeros: there is no entry to average over")
    return mask


def positive_finite(value, name: str, allow_none: bool = False):
    """A strictly positive, finite float (e.g. ε); None passes through when allowed."""
    if value is None and allow_none:
        return None
    v = _number(value, name)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def non_negative(value, name: str) -> float:
    """A finite float ≥ 0 (e.g. β, a loss coefficient)."""
    v = _number(value, name)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def unit_interval(value, name: str) -> float:
    """A float in [0, 1] (e.g. γ, λ)."""
    v = _number(value, name)
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return v


def _number(value, name: str) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
