"""Thresholds, the `Finding` record and the series helpers every detector shares (see the
package docstring for what each threshold means and where it comes from)."""

from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass

import numpy as np

# ---------------------------------------------------------------- thresholds (see module doc)
EARLY_FRAC = 0.2          # "early": first 20 % of the iterations, at least MIN_WINDOW
LATE_FRAC = 1 / 3         # "late": last third
MIN_WINDOW = 3            # fewest iterations a window may hold
MIN_POINTS = 6            # fewest finite values a detector needs before it judges a trend
SIG = 3.0                 # a difference of window means is significant beyond SIG·SE
SPIKE_FACTOR = 5.0        # approx_kl spike: ≥ 5× the median of all earlier updates
CLIPFRAC_FACTOR = 1.5     # ... together with clipfrac ≥ 1.5× its earlier median
RUNAWAY_FACTOR = 10.0     # approx_kl whose late median is 10× its early median runs away
LOG_RATIO_LIMIT = math.log(1.3)   # mean |log-ratio| of one update beyond log(1+ε), ε = 0.3
SPIKE_FLOOR = LOG_RATIO_LIMIT / 4  # ≈ 0.066: a spike must also be large in absolute terms,
                                   # 3–6× the 0.01–0.02 of healthy PPO updates
DROP_FRACTION = 0.2       # a drop worth naming: ≥ 20 % of the return range seen before it
KL_TARGET_FACTOR = 3.0    # adaptive β lost control: KL ≥ 3× its target for 3+ iterations
KL_NEAR_ZERO = 0.10       # "KL ≈ 0": KL to π_ref ≤ 10 % of the policy's own entropy
KL_ENTROPY_FACTOR = 2.0   # token-level KL blow-up: KL per token > 2× the entropy per token
ENTROPY_FLOOR = 0.05      # entropy ≤ 5 % of its initial value counts as collapsed
ABRUPT_FRACTION = 0.5     # one update that removes ≥ 50 % of the initial entropy is abrupt
DUPLICATE_FRACTION = 0.5  # ≥ 50 % identical sample responses is mode collapse
EV_FLOOR = 0.0            # explained variance ≤ 0: the critic is no better than a constant
VALUE_LOSS_FACTOR = 100.0 # value loss late ≥ 100× early while EV is poor: exploding
HACK_DIVERGENCE = 2.0     # proxy gain vs gold gain, both in noise units, see the detector

#: every failure signature: machine name -> the title the report prints
SIGNATURES = {
    "non_finite": "Non-finite values or divergence",
    "kl_blowup": "KL blow-up",
    "destabilising_update": "Destabilising update",
    "over_regularisation": "Over-regularisation (β too large)",
    "reward_hacking": "Reward hacking",
    "negative_kl": "Negative KL estimates",
    "entropy_collapse": "Entropy / mode collapse",
    "value_failure": "Value function failing",
}

#: the metrics that say "how well is it doing", most direct first
PERFORMANCE_KEYS = ("charts/expected_reward", "objective/proxy_reward",
                    "charts/episodic_return", "eval/return")

#: every metric a detector reads (besides `iteration`, sample texts and `*/diverged` flags):
#: a log with none of them gives the doctor nothing to judge
DOCTOR_KEYS = PERFORMANCE_KEYS + (
    "objective/gold_reward", "losses/approx_kl", "losses/clipfrac", "losses/entropy",
    "losses/explained_variance", "losses/value_loss", "objective/kl", "objective/kl_per_token",
    "objective/beta", "objective/target_kl")


@dataclass
class Finding:
    """One failure signature found in a log.

    Attributes:
        name: a key of `SIGNATURES` ("kl_blowup", ...).
        iterations: the iterations that show it (values of the records' `iteration`).
        evidence: metric -> what it did there (values, reference values, thresholds).
        fix: what to try.
        summary: one sentence saying what happened.
    """

    name: str
    iterations: list
    evidence: dict
    fix: str
    summary: str = ""

    @property
    def title(self) -> str:
        return SIGNATURES.get(self.name, self.name)

    def to_dict(self) -> dict:
        return {"title": self.title, **asdict(self)}


# ---------------------------------------------------------------- series helpers

class Records(list):
    """The records of one log (a list of dicts) that remembers each column `_series` has
    extracted, so that the detectors, which ask for the same metrics again and again, pay
    one pass over the records per metric. Build it once the records stop changing
    (`diagnose` does); `notes` holds what the reader had to say about the log."""

    def __init__(self, records=(), notes: list[str] | None = None):
        super().__init__(records)
        self.notes = list(notes or [])
        self.keys_seen: list[str] = []
        self._columns: dict = {}


def _iters(records: list[dict]) -> np.ndarray:
    cache = getattr(records, "_columns", None)
    if cache is not None and "\0iterations" in cache:
        return cache["\0iterations"]
    out = np.array([r.get("iteration", i) if _is_number(r.get("iteration", i)) else i
                    for i, r in enumerate(records)])
    if cache is not None:
        cache["\0iterations"] = out
    return out


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _late(x: np.ndarray) -> np.ndarray:
    """The last `LATE_FRAC` of a series (at least `MIN_WINDOW` points: `_window`)."""
    return x[-_window(x.size, LATE_FRAC):]


def _series(records: list[dict], key: str, finite: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(iterations, values) of the records that hold a number under `key`; `finite` drops
    NaN/inf. Both arrays are 1-D and aligned."""
    cache = getattr(records, "_columns", None)
    if cache is not None and (key, finite) in cache:
        return cache[key, finite]
    its = _iters(records)
    idx, vals = [], []
    for i, r in enumerate(records):
        v = r.get(key)
        if _is_number(v) and (not finite or math.isfinite(v)):
            idx.append(i)
            vals.append(float(v))
    out = its[idx] if idx else np.array([], dtype=int), np.array(vals, dtype=float)
    if cache is not None:
        for a in out:
            a.setflags(write=False)                  # shared by every detector: read-only
        cache[key, finite] = out
    return out


class RunningMedian:
    """The median of the numbers added so far, each `add` in O(log n) (two heaps: the lower
    half as a max-heap, the upper half as a min-heap), so that "the median of every earlier
    update" along a run costs O(n log n) instead of O(n²). Equals `np.median` of the same
    numbers (the mean of the two middle ones for an even count)."""

    def __init__(self):
        self._lo: list[float] = []                   # negated: a max-heap of the lower half
        self._hi: list[float] = []

    def __len__(self) -> int:
        return len(self._lo) + len(self._hi)

    def add(self, x: float) -> None:
        if self._lo and x > -self._lo[0]:
            heapq.heappush(self._hi, x)
        else:
            heapq.heappush(self._lo, -x)
        if len(self._lo) > len(self._hi) + 1:
            heapq.heappush(self._hi, -heapq.heappop(self._lo))
        elif len(self._hi) > len(self._lo):
            heapq.heappush(self._lo, -heapq.heappop(self._hi))

    def median(self) -> float:
        if not self._lo:
            return float("nan")
        if len(self._lo) > len(self._hi):
            return -self._lo[0]
        return (-self._lo[0] + self._hi[0]) / 2       # as np.median: the two middle ones


def noise(x: np.ndarray) -> float:
    """σ of a metric's iteration-to-iteration noise: 1.4826·MAD(Δx)/√2 (robust to trends and
    to single spikes). Floored at 1e-6 of the series' scale so that exact, noise-free series
    (e.g. an exactly computed expected reward) do not make every wiggle significant."""
    x = np.asarray(x, float)
    scale = float(np.max(np.abs(x))) if x.size else 0.0
    if x.size < 3:
        return max(1e-6 * scale, 1e-12)
    d = np.diff(x)
    sd = 1.4826 * float(np.median(np.abs(d - np.median(d)))) / math.sqrt(2)
    return max(sd, 1e-6 * scale, 1e-12)


def smooth(x: np.ndarray, w: int) -> np.ndarray:
    """Centred moving average over `w` points (shorter windows at the ends)."""
    x = np.asarray(x, float)
    if w <= 1 or x.size == 0:
        return x.copy()
    h = w // 2
    c = np.concatenate([[0.0], np.cumsum(x)])
    lo = np.clip(np.arange(x.size) - h, 0, x.size)
    hi = np.clip(np.arange(x.size) + h + 1, 0, x.size)
    return (c[hi] - c[lo]) / (hi - lo)


def _window(n: int, frac: float) -> int:
    return max(MIN_WINDOW, int(round(n * frac)))


def _fmt(v) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.3g}"
    return str(v)


def _perf(records) -> tuple[str, np.ndarray, np.ndarray] | None:
    """The first performance metric with enough values: (key, iterations, values)."""
    for key in PERFORMANCE_KEYS:
        it, x = _series(records, key)
        if x.size >= MIN_POINTS:
            return key, it, x
    return None


def _gain(x: np.ndarray) -> tuple[float, float]:
    """(late mean − early mean, its standard error from the noise σ)."""
    n = x.size
    e, l = _window(n, EARLY_FRAC), _window(n, LATE_FRAC)
    gain = float(np.mean(x[-l:]) - np.mean(x[:e]))
    se = noise(x) * math.sqrt(1 / e + 1 / l)
    return gain, se
