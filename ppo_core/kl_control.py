"""The KL coefficient β: fixed, or adapted to hit a target KL (introduced in chapter 02).

Ziegler et al. (2019), "Fine-Tuning Language Models from Human Preferences", adapt β
with a proportional controller whose error is clipped:

    e_t     = clip( KL_t / KL_target − 1, −0.2, 0.2 )
    β_{t+1} = β_t · (1 + K_β · e_t),      K_β = n_steps / horizon

KL above target raises β (pull back harder); KL below target lowers it. The clip keeps one
noisy KL measurement from moving β by more than 20 % × n_steps/horizon.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._checks import non_negative, positive_finite

__all__ = ["FixedKLController", "AdaptiveKLController", "make_kl_controller"]


@dataclass
class FixedKLController:
    """β that never changes. `update` is accepted (and ignored) so trainers need no branch."""

    beta: float

    def __post_init__(self):
        self.beta = non_negative(self.beta, "beta")

    def update(self, observed_kl: float, n_steps: int) -> float:
        _check_kl(observed_kl)
        return self.beta


@dataclass
class AdaptiveKLController:
    """Proportional β controller of Ziegler et al. 2019.

    Attributes:
        beta: current β (the initial value at construction), > 0.
        target: KL_target, the KL per update the controller aims for (e.g. 6 nats per
            sequence in the paper; much smaller for a bandit).
        horizon: how many samples it takes to correct a 20 % error fully (10,000 in the paper).
    """

    beta: float
    target: float
    horizon: float = 10_000

    def __post_init__(self):
        self.beta = positive_finite(self.beta, "beta")
        self.target = positive_finite(self.target, "target")
        self.horizon = positive_finite(self.horizon, "horizon")

    def update(self, observed_kl: float, n_steps: int) -> float:
        """Move β after an iteration that measured `observed_kl` over `n_steps` samples."""
        kl = _check_kl(observed_kl)
        if not isinstance(n_steps, int) or n_steps < 0:
            raise ValueError(f"n_steps must be a non-negative int, got {n_steps!r}")
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)           # e_t, clipped to ±0.2
        self.beta *= 1.0 + error * n_steps / self.horizon               # β ← β(1 + K_β e_t)
        return self.beta


def _check_kl(kl) -> float:
    v = float(kl)
    if not math.isfinite(v):
        raise ValueError(f"observed_kl must be finite, got {kl!r}")
    return v


def make_kl_controller(beta: float, kl_target: float | None = None, horizon: float = 10_000):
    """Fixed β when `kl_target` is None, the adaptive controller otherwise."""
    if kl_target is None:
        return FixedKLController(beta)
    return AdaptiveKLController(beta, kl_target, horizon)
