"""The doctor's figure: the standard metrics with the flagged iterations shaded (chapter 06)."""

from __future__ import annotations

import numpy as np

from .report import _records, diagnose
from .signals import PERFORMANCE_KEYS, SIGNATURES, Finding, _series

_PANELS = [
    ("performance", PERFORMANCE_KEYS + ("objective/gold_reward",)),
    ("KL", ("objective/kl", "losses/approx_kl")),
    ("clip / β", ("losses/clipfrac", "objective/beta")),
    ("entropy", ("losses/entropy",)),
    ("critic", ("losses/explained_variance",)),
]

#: which panels each finding is shaded on (its evidence lives there)
_FINDING_PANELS = {
    "non_finite": {"performance", "KL", "clip / β", "entropy", "critic"},
    "kl_blowup": {"KL"},
    "destabilising_update": {"performance", "KL", "clip / β"},
    "over_regularisation": {"performance", "KL", "clip / β"},
    "reward_hacking": {"performance"},
    "negative_kl": {"KL"},
    "entropy_collapse": {"entropy", "performance"},
    "value_failure": {"critic"},
}


def plot_findings(records: list[dict], findings: list[Finding] | None = None, title: str = ""):
    """A matplotlib figure of a run with its findings marked.

    Top: a timeline, one row per finding, with a bar over each iteration that shows it.
    Below: one panel per group of metrics present in `records` (performance, KL, clip/β,
    entropy, critic); each finding is shaded, in its colour, on the panels that hold its
    evidence, and a dashed line marks where it starts. `findings` defaults to
    `diagnose(records)`. Returns the figure."""
    import matplotlib.pyplot as plt

    records = _records(records, require_known=False)      # draws whatever it can read
    if findings is None:
        findings = diagnose(records) if panels_of(records) else []
    panels = panels_of(records)
    rows = max(1, len(findings))
    heights = [0.35 * rows + 0.3] + [1.7] * len(panels)
    fig, axes = plt.subplots(len(panels) + 1, 1, figsize=(8, sum(heights) + 0.8), sharex=True,
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    axes = axes[:, 0]                              # one column, even with no metric panel
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = list(SIGNATURES)

    def colour(f):
        return colours[names.index(f.name) % len(colours)] if f.name in names else "grey"

    tl = axes[0]
    for row, f in enumerate(findings):
        spans = [(a - 0.5, b - a + 1) for a, b in _runs(f.iterations)]
        tl.broken_barh(spans, (row - 0.35, 0.7), color=colour(f), alpha=0.8)
    tl.set_yticks(range(len(findings)))
    tl.set_yticklabels([f.title for f in findings], fontsize=8)
    tl.set_ylim(rows - 0.5, -0.5)
    tl.tick_params(axis="y", length=0)
    if not findings:
        tl.set_yticks([])
        tl.text(0.5, 0.5, "no problem found" if panels else
                "none of the metrics the doctor knows: nothing to judge",
                transform=tl.transAxes, ha="center", va="center", fontsize=9)
    for ax, (t, keys) in zip(axes[1:], panels):
        for k in keys:
            it, x = _series(records, k)
            ax.plot(it, x, label=k, lw=1.3, marker="." if x.size < 40 else None, ms=4)
        if t == "KL":
            ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_ylabel(t, fontsize=9)
        ax.legend(fontsize=7, loc="best")
        for f in findings:
            if t not in _FINDING_PANELS.get(f.name, set()):
                continue
            for a, b in _runs(f.iterations):
                ax.axvspan(a - 0.5, b + 0.5, color=colour(f), alpha=0.15, lw=0)
            ax.axvline(min(f.iterations), color=colour(f), ls="--", lw=1)
    axes[-1].set_xlabel("iteration")
    tl.set_title(title or ("no problem found" if not findings else
                           f"{len(findings)} problem(s) found"), fontsize=10)
    fig.tight_layout()
    return fig


def panels_of(records) -> list[tuple[str, list[str]]]:
    """(panel title, metrics) for each panel with a metric that is not all 0 or missing."""
    panels = [(t, [k for k in keys if np.any(_series(records, k)[1] != 0)]) for t, keys in _PANELS]
    return [(t, ks) for t, ks in panels if ks]              # metrics that are all 0 say nothing


def _runs(iterations) -> list[tuple[int, int]]:
    """Consecutive runs [(a, b), ...] of a sorted list of integers."""
    out = []
    for i in sorted(set(int(x) for x in iterations)):
        if out and i == out[-1][1] + 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out
