"""Answer key of exercises/06_diagnosis.ipynb (chapter 06: diagnosing instability).

The numeric answers are computed from the stored logs (the sweeps of chapter 06 in
`chapters/data/06/` and the doctor's log bank in `tests/log_bank/`), so they stay right when
the logs are regenerated; `questions()` asserts that the logs still support each question's
premise, so a regenerated log that changes the story fails loudly instead of silently
grading against a stale text.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

from .. import plots
from ..checker import MultipleChoice, Numeric
from ...metrics import read_log

#: case 3's constraints, as the notebook states them
GOLD_MIN, BANG_MAX, KL_MAX = 0.5, 0.25, 5.0
#: the seed of chapter 06's β sweep that the notebook reads (the one the chapter prints)
SEED = 1


def _root() -> Path:
    here = Path(__file__).resolve()
    for p in here.parents:
        if (p / "chapters" / "data" / "06").is_dir() and (p / "tests" / "log_bank").is_dir():
            return p
    raise FileNotFoundError("exercise 06 needs chapters/data/06 and tests/log_bank of the "
                            "course repository; ppo_core is not inside one")


@lru_cache(maxsize=None)
def _logs():
    root = _root()
    data, bank = root / "chapters" / "data" / "06", root / "tests" / "log_bank"
    spec = importlib.util.spec_from_file_location("make_sweeps", data / "make_sweeps.py")
    sweeps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweeps)                       # run definitions only; trains nothing
    beta = {b: read_log(data / f"beta_{b:g}_seed{SEED}.jsonl") for b in sweeps.BETAS}
    return {"beta": beta, "no_clip": read_log(data / "eps_rlhf_10.jsonl"),
            "cp_big": read_log(bank / "cartpole_large_beta.jsonl")}


def _tail(recs, key, n=5):
    return float(np.mean(plots.series(recs, key)[-n:]))


def _bang_fraction(recs, n=10):
    return float(np.mean([["!" in s["response"] for s in r["samples"]] for r in recs[-n:]]))


def _samples(recs):
    return [s for r in recs for s in r["samples"]]


C1_WHAT = MultipleChoice(
    "c1_what", "What happened to the ε = 10 run?",
    {"a": "reward hacking: the policy learnt the reward model's taste for \"!\" and exploits it",
     "b": "oversized updates collapsed the policy onto one phrase (entropy ≈ 0), then into a "
          "word loop",
     "c": "the value head failed, so the advantages were noise",
     "d": "β was too large, so the policy could not move"},
    "b",
    explanation="Without the clip, 4 epochs at lr 1e-3 take per-update steps with approx_kl of "
                "tenths of a nat, peaking above one nat (the KL panel, log scale), where PPO "
                "implementations aim for 0.01–0.03 per update. Entropy falls to ≈ 0: every "
                "sample becomes nearly the same ' works perfectly.'; then a few more oversized "
                "updates tip it into a loop (' perfectly. perfectly. perfectly. …') and gold falls "
                "below zero. Gold rose fastest at first (big steps are fast while they point the "
                "right way), then fell once the diversity was gone.",
    feedback={"a": "the samples contain no '!' (this run uses the unbiased reward model); look "
                   "at entropy",
              "c": "nothing here reads the value head; look at entropy and approx_kl",
              "d": "the KL to the reference grew past 100 nats: β = 0.05 did not hold it back"})

_C3_LETTERS = "abcdefgh"


def _c3_choice(table: dict) -> MultipleChoice:
    """Case 3's question; the feedback on each β says which constraints its row fails."""
    def fails(b):
        gold, bang, kl = table[b]
        out = []
        if gold < GOLD_MIN:
            out.append(f"gold {gold:.2f} < {GOLD_MIN}")
        if bang > BANG_MAX:
            out.append(f"'!' in {bang:.0%} of the responses > {BANG_MAX:.0%}")
        if kl > KL_MAX:
            out.append(f"KL {kl:.1f} > {KL_MAX:g} nats")
        return out
    betas = sorted(table)
    letters = dict(zip(_C3_LETTERS, betas))
    none = _C3_LETTERS[len(betas)]
    options = {k: f"β = {b:g}" for k, b in letters.items()}
    options[none] = "none"
    passing = [k for k, b in letters.items() if not fails(b)]
    return MultipleChoice(
        "c3_choice", "Which β meets all three constraints?", options,
        passing[0] if len(passing) == 1 else none,
        explanation="No β meets all three. The β that keep gold ≥ 0.5 write '!' in nearly every "
                    "response and end further than 5 nats from the reference; β = 1 stays close "
                    "and writes fewer '!', but learns too little for the gold bar. β moves the "
                    "policy along one trade-off curve between reward and KL; it cannot remove a "
                    "bias that the reward model itself carries, because every point on that curve "
                    "is optimal *for the biased reward*. Fix the objective first — debias or "
                    "relabel the preference data, or add an explicit style term to the reward — "
                    "then pick β (or a KL target) on the new curve.",
        feedback={k: f"β = {b:g} fails: " + "; ".join(fails(b)) for k, b in letters.items()
                  if fails(b)},
        hint="check each row against all three constraints, not just one")


C4_FIX = MultipleChoice(
    "c4_fix", "Which change keeps real gains and stops the regression?",
    {"a": "a KL penalty (β > 0, or a KL target) plus early stopping on a held-out gold check",
     "b": "a larger learning rate, so the policy reaches the gold peak sooner",
     "c": "turning the clip off, so that PPO can escape the degenerate mode it is stuck in",
     "d": "more PPO epochs per batch, to fit each batch's advantages more closely"},
    "a",
    explanation="The proxy keeps paying for '!!!!' and for word loops; nothing in a β = 0 "
                "objective charges for moving away from the reference, so the policy drifts as "
                "far as the reward model lets it (KL ≈ 130 nats at the end, against ≈ 10 at "
                "β = 0.03 and 1.5 at β = 1). A KL penalty prices the drift; early stopping at the "
                "gold peak (a held-out gold or human check, never the proxy) stops before the "
                "regression. (b), (c) and (d) all make each update larger, which gets to the "
                "degenerate region faster.",
    hint="what in the β = 0 objective penalises moving away from the reference?")

C5_MONITOR = MultipleChoice(
    "c5_monitor", "Which monitoring catches the drift?",
    {"a": "the mean proxy reward of live traffic: it falls when the model drifts",
     "b": "the reward model's loss on its own training and validation data, recomputed after "
          "each deployment",
     "c": "the PPO clip fraction and the approx_kl of each update",
     "d": "agreement of the reward model with fresh human labels on current outputs, plus the "
          "live KL"},
    "d",
    explanation="The proxy itself cannot reveal its own error — it *rises* as the policy exploits "
                "it (a). The reward model's loss was measured on old data (b), and the clip "
                "fraction and approx_kl are about single PPO updates (c). Only an independent "
                "measurement on current outputs — fresh human or gold labels compared with the "
                "reward model, tracked over time, as in the figure — shows the gap; the live "
                "policy's KL to the reference says how far outside the reward model's training "
                "distribution it is operating.")

C6_CAUSE = MultipleChoice(
    "c6_cause", "Root cause of the reward-hacking spike",
    {"a": "PPO's clipping is broken, so the policy can move without limit",
     "b": "the annotators liked \"!\", the reward model learnt it as quality, and a weakly "
          "penalised policy exploited it",
     "c": "the gold judge rewards \"!\", so the gold scorer itself pays for exclamation marks "
          "and is to blame for the climb",
     "d": "the value head over-estimates long responses"},
    "b",
    explanation="Early in training, a sample with '!' gets a much higher proxy than one "
                "without, while its gold is only a little higher (6b: the policy's first '!' "
                "samples are also its first positive ones). The reward model learnt the "
                "annotators' taste for '!' (documented: SimulatedAnnotator(bias='exclamation')); "
                "'!!' is the cheapest way to raise the proxy, and at β ≤ 0.1 nearly every "
                "response ends up with it. The gold judge is indifferent to '!' (chapter 04 "
                "checks it) and penalises '!' spam, which is why gold falls when the β = 0 "
                "policy keeps adding more.",
    feedback={"c": "compare the proxy gap and the gold gap of 6b: which scorer pays for '!'? "
                   "(chapter 04: '.' → '!' changes the gold judge's score by 0)"})

C7_EFFECT = MultipleChoice(
    "c7_effect", "What does a very large β do?",
    {"a": "it pins the policy to the reference: KL stays near 0 and the reward barely moves",
     "b": "it makes training unstable, because the gradient of a heavily weighted penalty "
          "explodes",
     "c": "it speeds up learning, because the reference is a good policy",
     "d": "it has no effect, because the clip already bounds each update"},
    "a",
    explanation="The penalty makes every nat of KL cost more than the reward can pay, so the optimum "
                "of R − β·KL sits next to π_ref: KL stays small and so does the reward gain. CartPole "
                "with β = 10 never learns (return ≈ 25 against 500 for the healthy run); the doctor "
                "calls it over-regularisation. In RLHF, β = 1 kept KL near 1.5 nats, the proxy "
                "below 1 where the others reach 3, and gold at half of theirs. Safe, and — past "
                "some point — useless.")

C8_BOTH = MultipleChoice(
    "c8_both", "Why clip and penalty together?",
    {"a": "they are redundant; using both is a safety margin against bugs",
     "b": "the clip bounds one update's move from π_old; the penalty bounds the drift from π_ref",
     "c": "the penalty makes the clip differentiable, so the two must go together",
     "d": "the clip is what prevents reward hacking, and the penalty is what prevents mode "
          "collapse"},
    "b",
    explanation="The evidence: with the penalty but no clip, single updates reached approx_kl "
                "above one nat, far past any per-update KL target, and collapsed the policy "
                "(case 1); with the clip but no penalty, every update stayed small (approx_kl "
                "below 0.06), yet the policy drifted over a hundred nats from the reference and "
                "learnt to hack the reward model (cases 4 and 6). The clip is local (relative to π_old, per sample, per "
                "update); the penalty is global (relative to π_ref, over the whole run). "
                "Neither bounds what the other does.",
    feedback={"d": "the no-penalty run hacked the reward model *with* the clip on"})


def questions() -> list:
    """The notebook's questions, in notebook order (reads the stored logs)."""
    S, logs = plots.series, _logs()
    beta, no_clip, cp_big = logs["beta"], logs["no_clip"], logs["cp_big"]
    b0 = beta[0.0]
    gold0 = plots.rolling_mean(S(b0, "objective/gold_reward"), 5)
    early, late = _samples(b0[:10]), _samples(b0[-10:])
    cal = np.polyfit([s["proxy"] for s in early], [s["gold"] for s in early], 1)
    overpromise = float(np.mean(np.polyval(cal, [s["proxy"] for s in late]))
                        - np.mean([s["gold"] for s in late]))
    with_bang = [s["proxy"] for s in early if "!" in s["response"]]
    without = [s["proxy"] for s in early if "!" not in s["response"]]
    gap = float(np.mean(with_bang) - np.mean(without))
    max_kl = float(S(no_clip, "losses/approx_kl").max())
    gold_b0, gold_wb = ([s["gold"] for s in early if ("!" in s["response"]) == w] for w in (False, True))

    # the premises the texts above state; a regenerated log that breaks one must fail here
    assert S(no_clip, "losses/entropy").min() < 0.05 * S(no_clip, "losses/entropy")[0], "case 1: entropy ≈ 0"
    assert S(no_clip, "objective/gold_reward")[-3:].mean() < 0, "case 1: the loop's gold is below 0"
    assert S(no_clip, "objective/kl").max() > 100, "case 1 feedback d: KL past 100 nats"
    assert max_kl > 1.0, "cases 1 and 8 say the no-clip run took an update above one nat"
    assert np.median(S(no_clip, "losses/approx_kl")[:20]) > 0.1, "case 1: tenths of a nat"
    assert S(b0, "losses/approx_kl").max() < 0.06, "case 8: the clipped β = 0 updates stay small"
    assert S(b0, "objective/kl")[-5:].mean() > 100, "case 8: drifted over a hundred nats"
    assert gap > 1.0 and overpromise > 1.0, "cases 5 and 6: 'well over a point'"
    assert np.mean(gold_wb) - np.mean(gold_b0) < gap / 3, "case 6: gold's gap is much smaller"
    table = {b: (_tail(r, "objective/gold_reward"), _bang_fraction(r), _tail(r, "objective/kl"))
             for b, r in beta.items()}
    assert set(table) == {0.0, 0.03, 0.1, 0.3, 1.0}, "case 3 names these five β"
    assert not [b for b, (gold, bang, kl) in table.items()
                if gold >= GOLD_MIN and bang <= BANG_MAX and kl <= KL_MAX], "case 3: none passes"
    assert table[1.0][0] < GOLD_MIN and table[1.0][2] <= KL_MAX, "case 3 explanation: β = 1"
    assert all(g >= GOLD_MIN and bang > 0.85 and kl > KL_MAX
               for b, (g, bang, kl) in table.items() if 0 < b < 0.3), "case 3 explanation"
    assert 100 < _tail(b0, "objective/kl") and 5 < _tail(beta[0.03], "objective/kl") < 15 \
        and _tail(beta[1.0], "objective/kl") < 2, "case 4's explanation quotes these KLs"

    return [
        C1_WHAT,
        Numeric(
            "c1_max_kl", "largest per-update approx_kl of the ε = 10 run", max_kl, rtol=0.05,
            unit="nats",
            explanation="Several times the doctor's line, log(1.3) ≈ 0.26, and more than thirty "
                        "times the per-update KL that PPO implementations target (0.01–0.03): "
                        "single updates moved the policy further than any trust region would allow, "
                        "which is exactly what the clip exists to prevent.",
            hint="the maximum of S(case1['ε = 100 (no clip)'], 'losses/approx_kl')"),
        Numeric(
            "c2_beta", "β above which PPO prefers B", (3.1 - 2.6) / (40 - 5), rtol=0.03,
            explanation="Set R_A − β·KL_A = R_B − β·KL_B: β = (3.1 − 2.6)/(40 − 5) ≈ 0.014. Above it "
                        "the shaped return of B is higher, so PPO raises B's probability although "
                        "the reward model ranks A higher. That is not a conflict to fix: the "
                        "objective is the reward *minus* the price of moving away from the "
                        "reference, and a reward gained by moving far (the hacked A) is charged "
                        "for it. In the sweep, every β ≥ 0.03 kept the policy out of the '!!!!' "
                        "regime, where the β = 0 runs ended.",
            hint="write the two KL-shaped returns and solve for the β where they are equal"),
        _c3_choice(table),
        C4_FIX,
        Numeric(
            "c4_peak", "iteration of the smoothed gold peak, β = 0",
            float(S(b0, "iteration")[np.argmax(gold0)]), atol=3, rtol=0.0,
            explanation="After its peak the smoothed gold stops improving and drifts down while "
                        "the proxy stays near its ceiling: from here on, extra KL buys proxy and "
                        "no gold. That is the point to stop (or to which a KL target should hold "
                        "the policy).",
            hint="np.argmax of plots.rolling_mean(S(b0, 'objective/gold_reward'), 5), as an "
                 "iteration"),
        Numeric(
            "c5_corr", "mean over-prediction of gold on late samples", overpromise, atol=0.03,
            rtol=0.0,
            explanation="On the data it was calibrated on (iterations 1–10) the line predicts "
                        "gold without bias; on the drifted policy's samples it over-predicts the "
                        "mean gold by well over a point: the proxy says 'excellent', gold says "
                        "'worse than the reference'. Off its training distribution the reward "
                        "model's scores say little about quality (in the late samples proxy and "
                        "gold barely correlate). After deployment the same happens as inputs "
                        "drift; only fresh gold (human) labels on current outputs reveal it.",
            hint="np.polyfit on the early samples (x = proxy, y = gold), np.polyval on the late "
                 "proxies, then predicted mean minus actual mean"),
        C5_MONITOR,
        C6_CAUSE,
        Numeric(
            "c6_gap", "proxy gap with/without '!' on the first 10 iterations", gap, atol=0.1,
            rtol=0.0,
            explanation="A gap of this size early in training, with a gold gap several times "
                        "smaller, is the bias that RL then amplifies: the reward model pays for "
                        "'!' itself. PPO then only has to find it.",
            hint="mean proxy of samples containing '!' minus mean proxy of those that do not"),
        C7_EFFECT,
        Numeric(
            "c7_return", "CartPole β = 10: mean episodic return of the last 5 iterations",
            _tail(cp_big, "charts/episodic_return"), rtol=0.1,
            explanation="A random CartPole policy survives about 20 steps; β = 10 keeps the "
                        "policy so close to its uniform start that it barely beats that, while "
                        "the healthy run reaches 500.",
            hint="tail_mean(cp_big, 'charts/episodic_return')"),
        C8_BOTH,
    ]
