"""Matplotlib figures shared by the chapters and the widgets (all chapters).

Every function draws on axes it is given (or makes its own figure) and returns the
`matplotlib.figure.Figure`, so a chapter can `fig.savefig(...)` and a widget can redraw
into an `Output`. Inputs are the metrics records every trainer returns (one dict per
iteration, the README's namespaced keys), so the same plot serves a live run and a JSONL log.

Contents (add new figures at the end, under a heading naming their chapter):
    series                      one key of a list of records as a float array (NaN if missing)
    -- chapter 01: bandits and policy gradients
    plot_arm_probs              stacked arm probabilities π(a) over updates
    plot_gradient_variance      bars of measured gradient variance per baseline
    plot_lr_sweep               fraction of runs that end on the best arm, per learning rate
    -- chapter 02: trust regions
    surrogate_curves            the per-sample clipped objective, penalty and sum against r
    plot_clipped_objective      those curves for Â > 0 and Â < 0
    plot_bandit_run             reward, π(best), KL to ref, per-update KL, clipfrac (the lab)
    plot_constraint_comparison  per-update KL and KL to the reference for several runs
    plot_adaptive_beta          β and KL to the reference against the target
    plot_beta_sweep             final reward and KL to the reference against β, with π*
    -- chapter 06: diagnosing instability
    rolling_mean                trailing moving average (no look-ahead)
    plot_runs                   several runs overlaid, one panel per metric
    plot_overoptimisation       gold and proxy reward against √KL per β, with the Gao fit
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from ..metrics import is_diverged

__all__ = ["series", "plot_arm_probs", "plot_gradient_variance", "plot_lr_sweep",
           "surrogate_curves", "plot_clipped_objective", "plot_bandit_run",
           "plot_constraint_comparison", "plot_adaptive_beta", "plot_beta_sweep",
           "rolling_mean", "plot_runs", "plot_overoptimisation"]

_COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def series(records: list[dict], key: str) -> np.ndarray:
    """`records[i][key]` as a float array `(len(records),)`, NaN where the key is absent."""
    return np.array([float(r[key]) if key in r and r[key] is not None else math.nan
                     for r in records], dtype=float)


def _axes(ax, ncols=1, figsize=(6, 3.2)):
    if ax is not None:
        return (ax.figure, ax)
    fig, ax = plt.subplots(1, ncols, figsize=figsize, constrained_layout=True)
    return fig, ax


def _diverged_note(ax, records):
    """Write 'DIVERGED at update k' on `ax` if the run diverged; return True if so."""
    bad = [r for r in records if is_diverged(r)]
    if not bad:
        return False
    ax.text(0.5, 0.5, f"DIVERGED at update {bad[0].get('iteration', '?')}",
            transform=ax.transAxes, ha="center", va="center", color="crimson",
            fontsize=11, fontweight="bold",
            bbox=dict(facecolor="white", edgecolor="crimson", alpha=0.85))
    return True


# ------------------------------------------------------------------ chapter 01

def plot_arm_probs(records: list[dict], ax=None, best: int | None = None, title: str = "",
                   labels=None, initial=None):
    """Stacked π(a) after each update (`bandit/probs`); the best arm is hatched.
    `initial`: optional `(A,)` π before the first update, drawn at update 0."""
    fig, ax = _axes(ax)
    probs = np.array([r["bandit/probs"] for r in records if "bandit/probs" in r])  # (U, A)
    if probs.size == 0:
        raise ValueError("records hold no 'bandit/probs': nothing to plot")
    x = np.arange(1, len(probs) + 1)
    if initial is not None:
        probs = np.vstack([np.asarray(initial, dtype=float).reshape(1, -1), probs])
        x = np.arange(0, len(probs))
    A = probs.shape[1]
    labels = labels or [f"arm {a}" for a in range(A)]
    polys = ax.stackplot(x, probs.T, labels=labels, colors=[_COLORS[a % 10] for a in range(A)],
                         alpha=0.85)
    if best is not None:
        polys[best].set_hatch("//")
        polys[best].set_label(labels[best] + " (best)")
    ax.set_xlim(x[0], max(x[-1], x[0] + 1))
    ax.set_ylim(0, 1)
    ax.set_xlabel("update")
    ax.set_ylabel("π(a)")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=7, ncol=min(A, 5), framealpha=0.8)
    _diverged_note(ax, records)
    return fig


def plot_gradient_variance(variances: dict, ax=None, title="Variance of the REINFORCE gradient"):
    """Bars of {label: tr Cov(ĝ)}, with the value printed on each bar."""
    fig, ax = _axes(ax, figsize=(5, 3))
    names, vals = list(variances), [float(v) for v in variances.values()]
    bars = ax.bar(names, vals, color=[_COLORS[i % 10] for i in range(len(vals))])
    for b, v in zip(bars, vals):
        ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.4f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("tr Cov(ĝ)")
    ax.set_title(title)
    return fig


def plot_lr_sweep(lrs, frac_best: dict, ax=None, title="Where runs end, by step size"):
    """Lines of {label: fraction of seeds whose most likely arm is the best} against lr."""
    fig, ax = _axes(ax, figsize=(5, 3))
    for i, (name, fr) in enumerate(frac_best.items()):
        ax.plot(lrs, fr, "o-", color=_COLORS[i % 10], label=name)
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("fraction of runs on the best arm")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


# ------------------------------------------------------------------ chapter 02

def surrogate_curves(r: np.ndarray, advantage: float, clip_eps: float | None, beta: float):
    """Per-sample curves against the ratio r = π_θ(a)/π_old(a), taking π_ref = π_old:

        clipped  = min(r·Â, clip(r, 1−ε, 1+ε)·Â)          (r·Â when ε is None)
        penalty  = β · k3(r),   k3(r) = 1/r − 1 + log r    (the k3 estimate of KL(π‖π_ref), ≥ 0)
        total    = clipped − penalty

    Returns a dict of arrays with keys "clipped", "penalty", "total", "unclipped".
    """
    import torch

    from ..losses import kl_estimate, surrogate_per_sample

    r = torch.as_tensor(np.asarray(r, dtype=float), dtype=torch.float64)    # exact 1 ± ε
    adv = torch.full_like(r, float(advantage))
    clipped, _ = surrogate_per_sample(r, adv, clip_eps)
    penalty = beta * kl_estimate(torch.log(r), torch.zeros_like(r), "k3")   # π_ref = π_old
    return {k: v.numpy() for k, v in {"clipped": clipped, "penalty": penalty,
                                      "total": clipped - penalty, "unclipped": r * adv}.items()}


def plot_clipped_objective(clip_eps: float | None = 0.2, beta: float = 0.0,
                           advantages=(1.0, -1.0), r_max: float = 3.0, axes=None):
    """The per-sample objective against r for each advantage in `advantages` (one panel each):
    the unclipped r·Â (dotted), the clipped surrogate, −β·k3(r) and their sum, with the
    maximiser of the sum marked. See `surrogate_curves` for the formulas."""
    if axes is None:
        fig, axes = plt.subplots(1, len(advantages), figsize=(4.2 * len(advantages), 3.3),
                                 constrained_layout=True, sharey=True)
    else:
        fig = np.atleast_1d(axes)[0].figure
    axes = np.atleast_1d(axes)
    r = np.linspace(0.05, r_max, 600)
    for ax, adv in zip(axes, advantages):
        c = surrogate_curves(r, adv, clip_eps, beta)
        ax.plot(r, c["unclipped"], ":", color="gray", label="r·Â (unclipped)")
        ax.plot(r, c["clipped"], color=_COLORS[0], lw=2,
                label="min(r·Â, clip(r)·Â)" if clip_eps is not None else "r·Â (clip off)")
        if beta > 0:
            ax.plot(r, -c["penalty"], color=_COLORS[3], label="−β·KL (k3)")
            ax.plot(r, c["total"], color="black", lw=2, label="sum")
        top = np.flatnonzero(c["total"] >= c["total"].max() - 1e-9)   # ties: a flat maximum
        i = int(top[np.argmin(np.abs(r[top] - 1.0))])                  # the tie nearest r = 1
        what = "max of sum" if beta > 0 else "max"
        if len(top) > 1:
            side = "≥" if r[top].mean() > r[i] else "≤"
            label = f"{what} (flat for r {side} {r[i]:.2f})"
        elif i in (0, len(r) - 1):
            label = f"{what} at the plot's edge: unbounded"
        else:
            label = f"{what} at r = {r[i]:.2f}"
        ax.plot(r[i], c["total"][i], "k*", ms=11, label=label)
        if clip_eps is not None:
            ax.axvspan(1 - clip_eps, 1 + clip_eps, color=_COLORS[2], alpha=0.12)
        ax.axvline(1.0, color="gray", lw=0.6)
        ax.axhline(0.0, color="gray", lw=0.6)
        ax.set_xlabel("r = π_θ(a) / π_old(a)")
        ax.set_title(f"Â = {adv:+g}, ε = {clip_eps if clip_eps is not None else 'off'}, β = {beta:g}")
        ax.set_ylim(-abs(adv) * r_max * 1.05 - 0.2, abs(adv) * r_max * 1.05 + 0.2)
        ax.legend(fontsize=7, loc="lower right" if adv > 0 else "lower left")
    axes[0].set_ylabel("per-sample objective")
    return fig


def plot_bandit_run(records: list[dict], axes=None, title: str = ""):
    """Five panels of one bandit PPO run: reward, π(best arm), KL(π‖π_ref), per-update
    KL(π_old‖π_new) and clip fraction. A diverged run is labelled on every panel."""
    if axes is None:
        fig, axes = plt.subplots(1, 5, figsize=(15, 2.8), constrained_layout=True)
    else:
        fig = np.atleast_1d(axes)[0].figure
    panels = [("charts/episodic_return", "mean reward"), ("bandit/p_best", "π(best arm)"),
              ("objective/kl", "KL(π‖π_ref)"), ("bandit/kl_step", "KL(π_old‖π_new)"),
              ("losses/clipfrac", "clip fraction")]
    x = series(records, "iteration")
    for ax, (key, name) in zip(np.atleast_1d(axes), panels):
        y = series(records, key)
        ax.plot(x, y, color=_COLORS[0])
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("update", fontsize=8)
        ax.tick_params(labelsize=7)
        if key == "bandit/kl_step" and np.nanmax(np.append(y, 0)) > 0:
            ax.set_yscale("log")
        _diverged_note(ax, records)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_constraint_comparison(runs: dict, axes=None, title: str = ""):
    """Left: per-update KL(π_old‖π_new) (log scale). Right: KL(π‖π_ref) over updates.
    `runs`: {label: records}."""
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), constrained_layout=True)
    else:
        fig = axes[0].figure
    for i, (name, recs) in enumerate(runs.items()):
        x = series(recs, "iteration") + 1
        axes[0].plot(x, series(recs, "bandit/kl_step"), color=_COLORS[i % 10], label=name)
        axes[1].plot(x, series(recs, "objective/kl"), color=_COLORS[i % 10], label=name)
    axes[0].set_yscale("log")
    axes[0].set_title("per-update KL to the previous policy")
    axes[0].set_ylabel("KL(π_old‖π_new)")
    axes[1].set_title("KL to the reference (cumulative drift)")
    axes[1].set_ylabel("KL(π‖π_ref)")
    for ax in axes:
        ax.set_xlabel("update")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def plot_adaptive_beta(records: list[dict], target: float, axes=None, title: str = ""):
    """Left: β over updates. Right: KL(π‖π_ref) with the controller's target dashed."""
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), constrained_layout=True)
    else:
        fig = axes[0].figure
    x = series(records, "iteration") + 1
    axes[0].plot(x, series(records, "objective/beta"), color=_COLORS[3])
    axes[0].set_title("β (adaptive)")
    axes[1].plot(x, series(records, "objective/kl"), color=_COLORS[0], label="KL(π‖π_ref)")
    axes[1].axhline(target, ls="--", color="gray", label=f"target {target:g}")
    axes[1].set_title("KL to the reference")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("update")
    if title:
        fig.suptitle(title)
    return fig


def plot_beta_sweep(betas, reward, kl, optimum_reward=None, optimum_kl=None, ref_reward=None,
                    axes=None, title: str = ""):
    """Left: final expected reward against β. Right: final KL(π‖π_ref) against β. Optional
    dashed curves for the penalised optimum π* and a grey line for π_ref's reward.
    β = 0 is drawn at 0.01 on the log axis (and the axis label says so)."""
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), constrained_layout=True)
    else:
        fig = axes[0].figure
    xs = [b if b > 0 else 0.01 for b in betas]
    for ax, ys, opt, name in [(axes[0], reward, optimum_reward, "expected reward"),
                              (axes[1], kl, optimum_kl, "KL(π‖π_ref)")]:
        ax.plot(xs, ys, "o-", color=_COLORS[0], label="trained")
        if opt is not None:
            ax.plot(xs, opt, "k--", label="π* (closed form)")
        ax.set_xscale("log")
        ax.set_xlabel("β" + ("  (β = 0 drawn at 0.01)" if min(betas) <= 0 else ""))
        ax.set_ylabel(name)
    if ref_reward is not None:
        axes[0].axhline(ref_reward, color="gray", lw=0.8, label="π_ref")
    for ax in axes:
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


# ------------------------------------------------------------------ chapter 06: diagnosing instability

def rolling_mean(x, w: int) -> np.ndarray:
    """Trailing moving average of `x` `(n,)` over `w` ≥ 1 points (the first w−1 average what
    there is), so a smoothed curve never looks into the future. NaNs are ignored."""
    x = np.asarray(x, dtype=float)
    if not isinstance(w, int) or w < 1:
        raise ValueError(f"w must be a positive int, got {w!r}")
    out = np.empty_like(x)
    for i in range(x.size):
        win = x[max(0, i - w + 1):i + 1]
        out[i] = np.nanmean(win) if np.isfinite(win).any() else math.nan
    return out


def plot_runs(runs: dict, keys, x: str = "iteration", smooth: int = 1, axes=None,
              title: str = "", logy=(), ncols: int | None = None, titles: dict | None = None,
              linthresh: float = 1e-3, panel_size=(4.2, 2.9), marker: str | None = None):
    """Several runs overlaid, one panel per metric.

    Args:
        runs: {label: records}, each records a list of metric dicts (a JSONL log); may be
            empty when `axes` are given (a lab before its first run).
        keys: metric keys, one panel each (e.g. "objective/gold_reward").
        x: the key on the x axis ("iteration", "global_step", ...).
        smooth: trailing moving-average window (1 = raw).
        axes: axes to draw into (cleared first), else a new figure of `panel_size` panels.
        logy: keys whose panel gets a symlog y axis, linear within ±`linthresh`.
        titles: {key: panel title} (default: the key).
        marker: a matplotlib marker for the points (default: lines only).
    Returns the figure."""
    keys = list(keys)
    if not keys or (not runs and axes is None):
        raise ValueError(f"runs and keys must be non-empty, got {len(runs)} runs, {len(keys)} keys")
    ncols = ncols or min(len(keys), 3)
    nrows = math.ceil(len(keys) / ncols)
    if axes is None:
        fig, axes = plt.subplots(nrows, ncols, constrained_layout=True, squeeze=False,
                                 figsize=(panel_size[0] * ncols, panel_size[1] * nrows))
        axes = axes.ravel()
    else:
        axes = np.atleast_1d(axes).ravel()
        fig = axes[0].figure
        for ax in axes:
            ax.clear()
    for i, (label, recs) in enumerate(runs.items()):
        xs = series(recs, x)
        for ax, k in zip(axes, keys):
            ys = series(recs, k)
            if np.all(np.isnan(ys)):
                continue
            ax.plot(xs, rolling_mean(ys, smooth), color=_COLORS[i % len(_COLORS)], lw=1.4,
                    marker=marker, ms=3, label=str(label))
    for ax, k in zip(axes, keys):
        ax.set_title((titles or {}).get(k, k), fontsize=9)
        ax.set_xlabel(x, fontsize=8)
        ax.grid(alpha=0.3)
        if k in logy:
            ax.set_yscale("symlog", linthresh=linthresh)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    if runs:
        axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


def plot_overoptimisation(runs: dict, smooth: int = 5, fit=None, axes=None, title: str = ""):
    """Gold and proxy reward against d = √KL(π‖π_ref), one curve per run (Gao et al. 2022).

    Args:
        runs: {β: records} of RLHF logs (`objective/kl` in nats per sequence,
            `objective/gold_reward`, `objective/proxy_reward`).
        smooth: trailing moving average over iterations, applied to KL and rewards alike.
        fit: optional (alpha, beta_g, gold0): draws gold0 + d(α − β_g·log d) on the gold
            panel with its peak d* = exp(α/β_g − 1) marked.
    Returns the figure (left: gold, right: proxy)."""
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), constrained_layout=True)
    else:
        fig = axes[0].figure
    d_max = 0.0
    for i, (beta, recs) in enumerate(runs.items()):
        kl = rolling_mean(series(recs, "objective/kl"), smooth)
        d = np.sqrt(np.clip(kl, 0, None))
        d_max = max(d_max, float(np.nanmax(d)))
        for ax, key in zip(axes, ("objective/gold_reward", "objective/proxy_reward")):
            ax.plot(d, rolling_mean(series(recs, key), smooth), color=_COLORS[i % len(_COLORS)],
                    lw=1.4, label=f"β = {beta:g}")
            ax.plot(d[-1], rolling_mean(series(recs, key), smooth)[-1], "o",
                    color=_COLORS[i % len(_COLORS)], ms=4)
    if fit is not None:
        alpha, beta_g, gold0 = fit
        dd = np.linspace(1e-3, d_max, 200)
        axes[0].plot(dd, gold0 + dd * (alpha - beta_g * np.log(dd)), "k--", lw=1.5,
                     label="fit d(α − β_g log d)")
        if beta_g > 0:
            d_star = math.exp(alpha / beta_g - 1)
            if d_star <= d_max:
                axes[0].axvline(d_star, color="gray", ls=":", lw=1.2)
                axes[0].text(d_star, axes[0].get_ylim()[0], f" d* = {d_star:.2f}", fontsize=8,
                             va="bottom", color="gray")
    axes[0].set_title("gold reward (simulated reader): what we want", fontsize=10)
    axes[1].set_title("proxy reward (reward model): what PPO sees", fontsize=10)
    for ax in axes:
        ax.set_xlabel("d = √KL(π‖π_ref)   (√nats per response)")
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return fig
