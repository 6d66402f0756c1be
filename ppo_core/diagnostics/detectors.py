"""One detector per failure signature: records in, a `Finding` or None out (chapter 06)."""

from __future__ import annotations

import math

import numpy as np

from ..metrics import is_diverged
from .signals import (ABRUPT_FRACTION, CLIPFRAC_FACTOR, DROP_FRACTION, DUPLICATE_FRACTION, EARLY_FRAC, ENTROPY_FLOOR, EV_FLOOR, HACK_DIVERGENCE, KL_ENTROPY_FACTOR, KL_NEAR_ZERO, KL_TARGET_FACTOR, LATE_FRAC, LOG_RATIO_LIMIT, MIN_POINTS, MIN_WINDOW, PERFORMANCE_KEYS, RUNAWAY_FACTOR, SIG, SPIKE_FACTOR, SPIKE_FLOOR, VALUE_LOSS_FACTOR,
                      Finding, RunningMedian, _fmt, _gain, _iters, _is_number, _late, _perf,
                      _series, _window, noise, smooth)

# ---------------------------------------------------------------- detectors

def detect_non_finite(records: list[dict]) -> Finding | None:
    """Rule: any logged number that is NaN or ±inf (JSONL stores them as "nan"/"inf"), or a
    truthy `*/diverged` flag (a trainer that stopped a run whose parameters blew up)."""
    bad, diverged = {}, []
    for it, r in zip(_iters(records), records):
        for k, v in r.items():
            if _is_number(v) and not math.isfinite(v):
                bad.setdefault(k, []).append(int(it))
        if is_diverged(r):
            diverged.append(int(it))
    if not bad and not diverged:
        return None
    iterations = sorted({i for its in bad.values() for i in its} | set(diverged))
    evidence = {k: f"non-finite at iterations {_fmt(its[:5])}" + (" ..." if len(its) > 5 else "")
                for k, its in bad.items()}
    if diverged:
        evidence["*/diverged"] = f"the trainer flagged divergence at iteration {diverged[0]}"
    first = iterations[0]
    return Finding(
        "non_finite", iterations, evidence,
        fix="Look at the iteration before the first bad one: lower the learning rate, keep the "
            "clip on and clip gradients (max_grad_norm); check log(0) and divisions by a "
            "zero std (advantage whitening of a constant batch).",
        summary=f"{len(bad) or 1} metric(s) stop being finite from iteration {first}.")


def detect_kl_blowup(records: list[dict], kl_target: float | None = None) -> Finding | None:
    """Rule (any of):

    * approx_kl (KL of one update, π_old→π_θ) runs away: its late median is
      ≥ `RUNAWAY_FACTOR` (10×) its early median and above `LOG_RATIO_LIMIT`/10, or
      any update exceeds `LOG_RATIO_LIMIT` = log 1.3 (the course's alarm: a mean log-ratio
      5–25× the 0.01–0.05 per-update KL that PPO implementations target);
    * the KL to the reference (`objective/kl`) runs away: with β > 0 it rises significantly
      (late vs early mean, SIG·SE), is not ≈ 0 (late KL per token above `KL_NEAR_ZERO` of the
      entropy, where the log has both), while the penalised objective J = R − β·KL falls
      significantly (R: `objective/proxy_reward`, or the bandit's `charts/expected_reward`).
      On the way to the optimum of its own objective, π* ∝ π_ref·e^{R/β}, a policy never pays
      more KL than it gains reward: KL(π*‖π_ref) ≤ (E_π*[R] − E_ref[R])/β. A KL that grows while
      J falls is the policy leaving the region its objective rewards, not converging to it;
    * token-level policies (`objective/kl_per_token`, any β): the KL per token still rises
      significantly over the second half and its late median exceeds `KL_ENTROPY_FACTOR` (2×)
      the policy's own entropy per token: the reference's cross-entropy on the samples is then
      over 3× the policy's — text the reference would practically never write;
    * with a KL target (argument `kl_target`, or a logged `objective/target_kl`) and β > 0:
      the smoothed KL stays ≥ `KL_TARGET_FACTOR` (3×) the target for 3+ iterations after the
      early window — the adaptive controller has lost control.
    """
    evidence, iterations = {}, set()
    it, ak = _series(records, "losses/approx_kl")
    if ak.size >= MIN_WINDOW:
        e, l = _window(ak.size, EARLY_FRAC), _window(ak.size, LATE_FRAC)
        early, late = float(np.median(ak[:e])), float(np.median(ak[-l:]))
        over = it[ak > LOG_RATIO_LIMIT]
        runaway = (ak.size >= MIN_POINTS and late >= RUNAWAY_FACTOR * max(early, 1e-12)
                   and late > LOG_RATIO_LIMIT / 10)
        if over.size >= 1 or runaway:
            iterations |= set(over.tolist()) if over.size else set(it[-l:].tolist())
            evidence["losses/approx_kl"] = (
                f"max {_fmt(float(ak.max()))} at iteration {int(it[np.argmax(ak)])}; "
                f"{over.size} update(s) above log(1.3) = {LOG_RATIO_LIMIT:.3f}; "
                f"median early {_fmt(early)}, late {_fmt(late)}")
    it_k, kl = _series(records, "objective/kl")
    _, beta = _series(records, "objective/beta")
    if kl.size >= MIN_POINTS and np.any(kl != 0):
        n = kl.size
        e, l = _window(n, EARLY_FRAC), _window(n, LATE_FRAC)
        rkey = next((k for k in ("objective/proxy_reward", "charts/expected_reward")
                     if _series(records, k)[1].size == n), None)
        _, klt_all = _series(records, "objective/kl_per_token")
        _, ent_all = _series(records, "losses/entropy")
        near_zero = (klt_all.size >= MIN_POINTS and ent_all.size == klt_all.size and
                     float(np.median(klt_all[-l:])) <= KL_NEAR_ZERO * float(np.median(ent_all[-l:])))
        if rkey is not None and beta.size == n and np.median(beta) > 0 and not near_zero:
            r = _series(records, rkey)[1]
            j = r - beta * kl                                    # J = R − β·KL, per record
            dj, se_j = _gain(j)
            dk, se_k = _gain(kl)
            if dj < -SIG * se_j and dk > SIG * se_k:
                iterations |= set(it_k[-l:].tolist())
                evidence["objective/kl"] = (
                    f"{_fmt(float(np.mean(kl[:e])))} early → {_fmt(float(np.mean(kl[-l:])))} late, "
                    f"while the penalised objective {rkey.split('/')[1]} − β·KL falls by "
                    f"{_fmt(-dj)} (SE {_fmt(se_j)}): the policy spends more KL than its own "
                    f"objective pays for")
    it_p, klt = _series(records, "objective/kl_per_token")
    _, ent = _series(records, "losses/entropy")
    if klt.size >= MIN_POINTS and ent.size == klt.size:
        l = _window(klt.size, LATE_FRAC)
        half = klt[klt.size // 2:]
        dk, se_k = _gain(half) if half.size >= MIN_POINTS else (0.0, 1.0)
        beyond = it_p[klt > KL_ENTROPY_FACTOR * ent]
        if (dk > SIG * se_k and beyond.size and
                float(np.median(klt[-l:])) > KL_ENTROPY_FACTOR * float(np.median(ent[-l:]))):
            iterations |= set(beyond.tolist())
            evidence["objective/kl_per_token"] = (
                f"still rising over the second half (+{_fmt(dk)}, SE {_fmt(se_k)}) and above "
                f"{KL_ENTROPY_FACTOR:g}× the policy's own entropy from iteration "
                f"{int(beyond[0])}: late median "
                f"{_fmt(float(np.median(klt[-l:])))} nats per token vs entropy "
                f"{_fmt(float(np.median(ent[-l:])))}")
    if kl.size >= MIN_POINTS and np.any(kl != 0):
        it_t, tg = _series(records, "objective/target_kl")
        target = kl_target if kl_target is not None else (float(np.median(tg)) if tg.size else None)
        if target is not None and target > 0 and (beta.size == 0 or np.median(beta) > 0):
            s = smooth(kl, MIN_WINDOW)
            above = (s >= KL_TARGET_FACTOR * target) & (np.arange(n) >= e)
            if above.sum() >= 3:
                iterations |= set(it_k[above].tolist())
                evidence["objective/kl (target)"] = (
                    f"smoothed KL ≥ {KL_TARGET_FACTOR:g}× the target {_fmt(target)} on "
                    f"{int(above.sum())} iterations (max {_fmt(float(s.max()))})")
    if not evidence:
        return None
    return Finding(
        "kl_blowup", sorted(iterations), evidence,
        fix="Shrink the step: lower the learning rate, turn the clip on (ε 0.1–0.2), fewer "
            "epochs per batch or early-stop the epochs on approx_kl (target_kl ≈ 0.01–0.05); "
            "for KL to the reference raise β or use the adaptive controller with a target.",
        summary=("The policy moves far further in one update than PPO's usual per-update "
                 "KL targets (0.01–0.05) allow"
                 if "losses/approx_kl" in evidence else
                 "The KL to the reference runs away") + (
                     "; the KL to the reference runs away too." if "losses/approx_kl" in evidence
                     and len(evidence) > 1 else "."))


def detect_destabilising_update(records: list[dict]) -> Finding | None:
    """Rule: an update t (after the first MIN_WINDOW) whose approx_kl is ≥ `SPIKE_FACTOR`
    (5×) the median of all earlier updates and above `SPIKE_FLOOR` = log(1.3)/4 ≈ 0.066
    (healthy PPO updates sit at 0.01–0.03 and can spike 5× without harm), with clipfrac
    ≥ `CLIPFRAC_FACTOR` (1.5×) its earlier median (or the clip switched off: clipfrac ≡ 0),
    followed by a drop of the performance metric: the mean over the next w iterations
    (w = 5 % of the run, ≥ 3) falls below the mean over the w up to t by more than
    SIG·SE *and* by ≥ `DROP_FRACTION` (20 %) of the range the metric covered before t.
    """
    it, ak = _series(records, "losses/approx_kl")
    perf = _perf(records)
    if ak.size < MIN_POINTS or perf is None:
        return None
    clip = dict(zip(*_series(records, "losses/clipfrac")))
    clip_off = len(clip) > 0 and all(v == 0 for v in clip.values())
    pkey, pit, px = perf
    sd = noise(px)
    w = _window(px.size, 0.05)
    order = np.argsort(pit, kind="stable")             # windows by iteration: searchsorted
    pit_s, px_s = pit[order], px[order]
    hist_max, hist_min = np.maximum.accumulate(px_s), np.minimum.accumulate(px_s)
    ak_median, clip_median = RunningMedian(), RunningMedian()   # of every earlier update
    for j in range(MIN_WINDOW):
        ak_median.add(float(ak[j]))
        if it[j] in clip:
            clip_median.add(float(clip[it[j]]))
    hits, evidence, worst = [], {}, 0.0
    for j in range(MIN_WINDOW, ak.size):
        if j > MIN_WINDOW:
            ak_median.add(float(ak[j - 1]))
            if it[j - 1] in clip:
                clip_median.add(float(clip[it[j - 1]]))
        base = ak_median.median()
        if not (ak[j] >= SPIKE_FACTOR * max(base, 1e-12) and ak[j] > SPIKE_FLOOR):
            continue
        t = int(it[j])
        if clip and not clip_off:
            c_base = clip_median.median() if len(clip_median) else 0.0
            if not (t in clip and clip[t] >= CLIPFRAC_FACTOR * max(c_base, 1e-3)):
                continue
        up_to = int(np.searchsorted(pit_s, t, side="right"))      # iterations ≤ t
        before = px_s[int(np.searchsorted(pit_s, t - w, side="right")):up_to]
        after = px_s[up_to:int(np.searchsorted(pit_s, t + w, side="right"))]
        if before.size < 2 or after.size < 2:
            continue
        drop = float(np.mean(before) - np.mean(after))
        se = sd * math.sqrt(1 / before.size + 1 / after.size)
        span = float(hist_max[up_to - 1] - hist_min[up_to - 1])   # range up to t
        if drop > SIG * se and drop >= DROP_FRACTION * span and span > 0:
            hits.append(t)
            if drop > worst:
                worst = drop
                evidence["losses/approx_kl"] = (f"{_fmt(float(ak[j]))} at iteration {t}, "
                                                f"{ak[j] / max(base, 1e-12):.0f}× the median "
                                                f"{_fmt(base)} of earlier updates")
                evidence["losses/clipfrac"] = ("0 throughout: the clip is off" if clip_off else
                                               f"{_fmt(clip.get(t, float('nan')))} at iteration "
                                               f"{t} vs median {_fmt(c_base)} before")
                evidence[pkey] = (f"mean {_fmt(float(np.mean(before)))} over the {before.size} "
                                  f"iterations up to {t}, {_fmt(float(np.mean(after)))} over the "
                                  f"next {after.size} (drop {_fmt(drop)}, noise σ {_fmt(sd)})")
    if not hits:
        return None
    if len(hits) > 1:
        evidence["spikes"] = f"{len(hits)} such updates, at iterations {_fmt(hits[:8])}"
    return Finding(
        "destabilising_update", hits, evidence,
        fix="One update jumped far outside the trust region and undid learning: lower the "
            "learning rate or anneal it, keep the clip on, add early stopping on approx_kl "
            "(target_kl), clip gradients, or use fewer epochs / larger minibatches.",
        summary=f"approx_kl and clipfrac spike, then {pkey} drops (worst at iteration "
                f"{evidence['losses/approx_kl'].split('iteration ')[1].split(',')[0]}).")


def detect_over_regularisation(records: list[dict]) -> Finding | None:
    """Rule: β > 0 (median over the run), the policy stays at the reference — the KL to
    π_ref (per token where the log has `objective/kl_per_token`) is, in its late median,
    ≤ `KL_NEAR_ZERO` (10 %) of the policy's own entropy, i.e. the policy differs from π_ref by
    less than 10 % of the randomness it has — and the reward has stopped moving: no
    performance metric improves significantly (SIG·SE) over the second half of the run.
    Without a logged entropy, "KL ≈ 0" falls back to: ≤ 3× the median |approx_kl| of one
    update. Only a fixed β is judged (β varies by < 10 % over the run): an adaptive β holds
    the KL at its target by design, and then it is the target that may be too small."""
    _, beta = _series(records, "objective/beta")
    kl_key = "objective/kl_per_token" if _series(records, "objective/kl_per_token")[1].size \
        else "objective/kl"
    it, kl = _series(records, kl_key)
    if beta.size < MIN_POINTS or kl.size < MIN_POINTS:
        return None
    b = float(np.median(beta))
    if b <= 0 or float(beta.max() - beta.min()) > 0.1 * b:
        return None                          # no penalty, or an adaptive β: see the docstring
    l = _window(kl.size, LATE_FRAC)
    kl_late = float(np.median(np.abs(kl[-l:])))
    _, h = _series(records, "losses/entropy")
    _, ak = _series(records, "losses/approx_kl")
    if h.size >= MIN_POINTS:
        h_late = float(np.median(_late(h)))
        if not kl_late <= KL_NEAR_ZERO * h_late:
            return None
        why = f"late median {_fmt(kl_late)} nats = {kl_late / max(h_late, 1e-12):.1%} of the " \
              f"policy's entropy {_fmt(h_late)} (≤ {KL_NEAR_ZERO:.0%})"
    elif ak.size >= MIN_POINTS:
        step = float(np.median(np.abs(ak)))
        if not kl_late <= 3 * max(step, 1e-12):
            return None
        why = f"late median {_fmt(kl_late)} ≤ 3× the median single-update approx_kl {_fmt(step)}"
    else:
        return None
    moved = []
    evidence = {"objective/beta": f"median {_fmt(b)}",
                kl_key: _kl_identically_zero(records) or why}
    for key in PERFORMANCE_KEYS:
        _, x = _series(records, key)
        if x.size < MIN_POINTS:
            continue
        half = x[x.size // 2:]
        gain, se = _gain(half)
        evidence[key] = (f"{_fmt(float(x[0]))} → {_fmt(float(x[-1]))}; over the second half "
                         f"{gain:+.3g} (SE {_fmt(se)})")
        moved.append(gain > SIG * se)
    if not moved or any(moved):
        return None
    return Finding(
        "over_regularisation", [int(i) for i in it[-l:]], evidence,
        fix="The KL penalty outweighs the reward: lower β (or give the adaptive controller a "
            "larger target KL); if β is already small, the learning rate may be too small.",
        summary=f"β ≈ {_fmt(b)} keeps the policy at the reference (KL ≈ 0) and the reward "
                f"does not move.")


def detect_reward_hacking(records: list[dict]) -> Finding | None:
    """Rule: needs `objective/proxy_reward` and `objective/gold_reward`. Both are smoothed over
    w = 10 % of the run (≥ 3) and measured in their own noise units (σ). Either

    * *gold falls*: after the gold curve's peak (not in the last w iterations) the proxy
      rises by > SIG·SE while gold falls by > SIG·SE; or
    * *gold stalls*: over the second half the proxy rises by > SIG·SE while gold does not
      rise significantly and the proxy's rise, in noise units, is ≥ `HACK_DIVERGENCE` (2×)
      gold's.
    """
    it, px = _series(records, "objective/proxy_reward")
    it_g, gx = _series(records, "objective/gold_reward")
    if px.size < MIN_POINTS or gx.size != px.size:
        return None
    n = px.size
    w = _window(n, 0.1)
    sp, sg = smooth(px, w), smooth(gx, w)
    sd_p, sd_g = noise(px), noise(gx)
    se_p, se_g = sd_p * math.sqrt(2 / w), sd_g * math.sqrt(2 / w)
    evidence = {}
    peak = int(np.argmax(sg))
    iterations = []
    if peak < n - w:
        dp = float(sp[-1] - sp[peak])
        dg = float(sg[-1] - sg[peak])
        if dp > SIG * se_p and -dg > SIG * se_g:
            iterations = [int(i) for i in it[peak:]]
            evidence["objective/proxy_reward"] = (f"{_fmt(float(sp[peak]))} → {_fmt(float(sp[-1]))}"
                                                  f" after iteration {int(it[peak])} (+{_fmt(dp)})")
            evidence["objective/gold_reward"] = (f"peaks at {_fmt(float(sg[peak]))} (iteration "
                                                 f"{int(it[peak])}), falls to {_fmt(float(sg[-1]))}")
    if not iterations:
        h = n // 2
        if n - h >= 2 * MIN_WINDOW:
            a, b = h, n - 1
            dp, dg = float(sp[b] - sp[a]), float(sg[b] - sg[a])
            if (dp > SIG * se_p and dg <= SIG * se_g and
                    dp / sd_p >= HACK_DIVERGENCE * max(dg / sd_g, 0.0)):
                iterations = [int(i) for i in it[a:]]
                evidence["objective/proxy_reward"] = (f"rises {_fmt(float(sp[a]))} → "
                                                      f"{_fmt(float(sp[b]))} over the second half")
                evidence["objective/gold_reward"] = (f"stalls: {_fmt(float(sg[a]))} → "
                                                     f"{_fmt(float(sg[b]))} (noise σ {_fmt(sd_g)})")
    if not iterations:
        return None
    _, kl = _series(records, "objective/kl")
    _, beta = _series(records, "objective/beta")
    if kl.size:
        evidence["objective/kl"] = (_kl_identically_zero(records)
                                    or f"{_fmt(float(kl[0]))} → {_fmt(float(kl[-1]))}")
    if beta.size:
        evidence["objective/beta"] = f"median {_fmt(float(np.median(beta)))}"
    samples = _last_samples(records)
    if samples:
        evidence["samples"] = samples[:2]
    return Finding(
        "reward_hacking", iterations, evidence,
        fix="The policy exploits the reward model rather than the task: raise β (or lower the "
            "KL target; if the KL is exactly 0, freeze a copy of the initial policy as the "
            "reference), stop at the gold peak (early stopping on a held-out gold/human "
            "check), and fix the reward model's blind spot (more or debiased preference data).",
        summary="The proxy reward keeps climbing while the gold reward stalls or falls.")


def detect_negative_kl(records: list[dict]) -> Finding | None:
    """Rule: the KL to the reference (`objective/kl`, a mean of per-token estimates) is
    negative beyond its noise: its moving average over w = 10 % of the run (≥ 3) is below
    −SIG·σ/√w for at least 2 iterations, or its mean over the whole run is below −SIG·σ/√n.
    True KL is ≥ 0; k1 estimates may dip below 0 by noise only."""
    it, kl = _series(records, "objective/kl")
    if kl.size < MIN_POINTS or not np.any(kl != 0):
        return None
    n = kl.size
    w = _window(n, 0.1)
    sd = noise(kl)
    s = smooth(kl, w)
    neg = s < -SIG * sd / math.sqrt(w)
    whole = float(np.mean(kl)) < -SIG * sd / math.sqrt(n)
    if neg.sum() < 2 and not whole:
        return None
    bad = it[neg] if neg.any() else it
    return Finding(
        "negative_kl", [int(i) for i in bad],
        {"objective/kl": f"min {_fmt(float(kl.min()))} at iteration {int(it[np.argmin(kl)])}; "
                         f"{int((kl < 0).sum())} of {n} iterations < 0; moving average below "
                         f"−{SIG:g}·σ/√w on {int(neg.sum())} (σ {_fmt(sd)})"},
        fix="True KL is never negative: sampling and scoring disagree. Score with the same "
            "temperature / top-k / top-p as sampling, keep the reference in eval mode with the "
            "same dtype, mask padding out of the KL, and check the logit/token alignment.",
        summary="The KL estimate to the reference is negative beyond noise.")


def _kl_identically_zero(records: list[dict]) -> str | None:
    """A note when the KL to the reference is exactly 0 on every iteration although β > 0 and
    the policy moves (approx_kl ≠ 0): the reference is not a frozen copy — it trains along
    with the policy, and the penalty does nothing."""
    _, kl = _series(records, "objective/kl")
    _, beta = _series(records, "objective/beta")
    _, ak = _series(records, "losses/approx_kl")
    if (kl.size >= MIN_POINTS and np.all(kl == 0) and beta.size and np.median(beta) > 0
            and ak.size and np.any(np.abs(ak) > 0)):
        return (f"exactly 0 on all {kl.size} iterations although β = {_fmt(float(np.median(beta)))}"
                f" > 0 and the policy moves (approx_kl up to {_fmt(float(np.abs(ak).max()))}): "
                f"is the reference frozen, or is it the policy's own network?")
    return None


def _sample_texts(record: dict) -> list[str]:
    """The responses of a record's `samples` (dicts with "response" or "text", or strings)."""
    s = record.get("samples")
    if not isinstance(s, list):
        return []
    return [str(x.get("response", x.get("text", ""))) if isinstance(x, dict) else str(x)
            for x in s]


def _last_samples(records: list[dict]) -> list[str]:
    for r in reversed(records):
        texts = _sample_texts(r)
        if texts:
            return texts
    return []


def _duplicate_fraction(records: list[dict], last: int) -> tuple[float, int]:
    texts = [t.strip() for r in records[-last:] for t in _sample_texts(r)]
    if len(texts) < 4:
        return 0.0, len(texts)
    counts = {}
    for t in texts:
        counts[t] = counts.get(t, 0) + 1
    return max(counts.values()) / len(texts), len(texts)


def detect_entropy_collapse(records: list[dict]) -> Finding | None:
    """Rule: with H₀ the largest entropy of the early window, entropy ends (late median)
    ≤ `ENTROPY_FLOOR` (5 %) of H₀ *and* the collapse is harmful, i.e. one of

    * abrupt: a single update removed ≥ `ABRUPT_FRACTION` (50 %) of H₀ (converging to a good
      deterministic policy is gradual; a jump is an update out of control);
    * to a worse mode: performance after entropy first fell below 5 % of H₀ is below the best
      performance before it by > SIG·SE;
    * mode collapse in samples: ≥ `DUPLICATE_FRACTION` (50 %) of the logged sample responses
      of the last third are the same text (this alone is enough, whatever the entropy).
    """
    it, h = _series(records, "losses/entropy")
    dup, n_texts = _duplicate_fraction(records, _window(len(records), LATE_FRAC))
    evidence, iterations = {}, []
    if dup >= DUPLICATE_FRACTION:
        evidence["samples"] = (f"{dup:.0%} of the {n_texts} sample responses of the last third "
                               f"are one and the same text")
        iterations = [int(i) for i in _iters(records)[-_window(len(records), LATE_FRAC):]]
    if h.size >= MIN_POINTS:
        e, l = _window(h.size, EARLY_FRAC), _window(h.size, LATE_FRAC)
        h0 = float(np.max(h[:e]))
        h_late = float(np.median(h[-l:]))
        if h0 > 0 and h_late <= ENTROPY_FLOOR * h0:
            reasons = []
            drops = -np.diff(h)
            j = int(np.argmax(drops))
            if drops[j] >= ABRUPT_FRACTION * h0:
                reasons.append(f"one update (iteration {int(it[j + 1])}) removed "
                               f"{drops[j] / h0:.0%} of it")
            first = int(np.argmax(h <= ENTROPY_FLOOR * h0))
            perf = _perf(records)
            if perf is not None:
                pkey, pit, px = perf
                before, after = px[pit <= it[first]], px[pit > it[first]]
                if before.size >= 2 and after.size >= 2:
                    sd = noise(px)
                    gap = float(before.max() - np.mean(after))
                    if gap > SIG * sd * math.sqrt(1 + 1 / after.size):
                        reasons.append(f"{pkey} after the collapse averages "
                                       f"{_fmt(float(np.mean(after)))}, below the "
                                       f"{_fmt(float(before.max()))} reached before")
            if reasons or evidence:
                evidence["losses/entropy"] = (f"{_fmt(h0)} early → {_fmt(h_late)} late "
                                              f"(≤ {ENTROPY_FLOOR:.0%} of its start)"
                                              + ("; " + "; ".join(reasons) if reasons else ""))
                iterations = sorted(set(iterations) | {int(i) for i in it[first:]})
    if not evidence:
        return None
    return Finding(
        "entropy_collapse", iterations, evidence,
        fix="The policy became (near-)deterministic too soon: lower the learning rate, keep the "
            "clip, add an entropy bonus (ent_coef) or, in RLHF, a larger β to the reference; "
            "check the sampling temperature.",
        summary="Entropy fell to near zero" + (" and the samples repeat." if dup >= DUPLICATE_FRACTION
                                               else " in a harmful way."))


def detect_value_failure(records: list[dict]) -> Finding | None:
    """Rule (either):

    * after the early window the median explained variance 1 − Var(R − V)/Var(R) is
      ≤ `EV_FLOOR` (0: the critic predicts the returns no better than a constant) *and* the
      value loss has stopped falling (its late mean is not below its early mean by SIG·SE).
      EV ≤ 0 alone is normal while a fresh critic is still learning — in RLHF a value head
      on a prefix cannot yet predict the score of the whole response — and then its loss
      falls; a critic that fails neither explains the returns nor improves;
    * the value loss grows ≥ `VALUE_LOSS_FACTOR` (100×) from its early median while the late
      explained variance stays below 0.5 (returns that merely grow keep EV high)."""
    it, ev = _series(records, "losses/explained_variance")
    _, vl = _series(records, "losses/value_loss")
    evidence = {}
    iterations = []
    if ev.size >= MIN_POINTS:
        e = _window(ev.size, EARLY_FRAC)
        ev_after = float(np.median(ev[e:]))
        learning = False
        if vl.size >= MIN_POINTS:
            gain, se = _gain(-vl)                       # a falling loss is a positive gain
            learning = gain > SIG * se
        if ev_after <= EV_FLOOR and not learning:
            evidence["losses/explained_variance"] = (f"median {_fmt(ev_after)} after the first "
                                                     f"{e} iterations (≤ {EV_FLOOR:g}); last "
                                                     f"{_fmt(float(ev[-1]))}")
            if vl.size >= MIN_POINTS:
                evidence["losses/value_loss"] = (f"not falling: {_fmt(float(np.mean(vl[:e])))} "
                                                 f"early, {_fmt(float(np.mean(_late(vl))))} late")
            iterations = [int(i) for i in it[e:]]
        if vl.size >= MIN_POINTS:
            ve, vlate = float(np.median(vl[:e])), float(np.median(_late(vl)))
            ev_late = float(np.median(_late(ev)))
            if vlate >= VALUE_LOSS_FACTOR * max(ve, 1e-12) and ev_late < 0.5:
                evidence["losses/value_loss"] = (f"median {_fmt(ve)} early → {_fmt(vlate)} late "
                                                 f"({vlate / max(ve, 1e-12):.0f}×), explained "
                                                 f"variance late {_fmt(ev_late)}")
                iterations = iterations or [int(i) for i in it[-_window(ev.size, LATE_FRAC):]]
    if not evidence:
        return None
    return Finding(
        "value_failure", iterations, evidence,
        fix="The critic does not learn the returns: check vf_coef > 0 and that the value head "
            "gets gradients, normalise or scale rewards, lower the value learning rate or clip "
            "the value update (value_clip_eps), and check the bootstrapping at episode ends.",
        summary="Explained variance ≤ 0 and no progress: the value function does not predict "
                "the returns.")


#: detector name -> function, in the order the report lists them
DETECTORS = {
    "non_finite": detect_non_finite,
    "kl_blowup": detect_kl_blowup,
    "destabilising_update": detect_destabilising_update,
    "over_regularisation": detect_over_regularisation,
    "reward_hacking": detect_reward_hacking,
    "negative_kl": detect_negative_kl,
    "entropy_collapse": detect_entropy_collapse,
    "value_failure": detect_value_failure,
}
