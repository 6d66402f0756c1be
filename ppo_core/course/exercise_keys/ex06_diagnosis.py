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
    beta = {b: read_log(data / f"beta_{b:g}.jsonl") for b in sweeps.BETAS}
    return {"beta": beta, "eps100": read_log(data / "eps_rlhf_100.jsonl"),
            "cp_big": read_log(bank / "cartpole_large_beta.jsonl")}


def _tail(recs, key, n=5):
    return float(np.mean(plots.series(recs, key)[-n:]))


def _bang_fraction(recs, n=10):
    return float(np.mean([["!" in s["response"] for s in r["samples"]] for r in recs[-n:]]))


def _samples(recs):
    return [s for r in recs for s in r["samples"]]


C1_WHAT = MultipleChoice(
    "c1_what", "What happened to the ε = 100 run?",
    {"a": "reward hacking: the policy learnt the reward model's taste for \"!\" and exploits it",
     "b": "oversized updates collapsed the policy onto one short answer (entropy ≈ 0)",
     "c": "the value head failed, so the advantages were noise",
     "d": "β was too large, so the policy could not move"},
    "b",
    explanation="Without the clip, 4 epochs at lr 1e-3 take per-update steps with approx_kl of "
                "tenths of a nat, peaking above one nat (the KL panel, log scale), where PPO "
                "implementations aim for 0.01–0.03 per update. Entropy falls to ≈ 0 and every "
                "sample becomes the same short ' great': the policy jumped into one mode. Gold "
                "rose fastest at first (big steps are fast while they point the right way), then "
                "fell once the diversity was gone. The doctor names it: KL blow-up and entropy "
                "collapse.",
    feedback={"a": "the samples contain no '!' (this run uses the unbiased reward model); look "
                   "at entropy",
              "c": "nothing here reads the value head; look at entropy and approx_kl",
              "d": "the KL to the reference grew to ~20 nats: β = 0.05 did not hold it back"})

_TOO_FAR = "look at the '!' and KL columns against constraints 2 and 3"

C3_CHOICE = MultipleChoice(
    "c3_choice", "Which β meets all three constraints?",
    {"a": "β = 0", "b": "β = 0.02", "c": "β = 0.05", "d": "β = 0.1", "e": "β = 0.3",
     "f": "β = 1", "g": "none"},
    "g",
    explanation="Every β that keeps gold ≥ 0.5 (β ≤ 0.3) writes '!' in almost every response and "
                "ends more than 5 nats from the reference; β = 1 stays within 5 nats but still "
                "writes '!' in about half of its responses and has fallen below the gold bar. "
                "No β meets all three. β moves the policy along one trade-off curve between "
                "reward and KL; it cannot remove a bias that the reward model itself carries, "
                "because every point on that curve is optimal *for the biased reward*. Fix the "
                "objective first — debias or relabel the preference data, or add an explicit "
                "style term to the reward — then pick β (or a KL target) on the new curve.",
    feedback={"a": f"β = 0: gold passes, but {_TOO_FAR}",
              "b": f"β = 0.02: gold passes, but {_TOO_FAR}",
              "c": f"β = 0.05: gold passes, but {_TOO_FAR}",
              "d": f"β = 0.1: gold passes, but {_TOO_FAR}",
              "e": "β = 0.3: gold passes, but look at its '!' column, and at its KL against "
                   "the 5-nat limit",
              "f": "β = 1: its KL is within the limit, but look at its gold and its '!' "
                   "fraction"},
    hint="check each row against all three constraints, not just one")

C4_FIX = MultipleChoice(
    "c4_fix", "Which change keeps real gains and stops the regression?",
    {"a": "a KL penalty (β > 0, or a KL target) plus early stopping on a held-out gold check",
     "b": "a larger learning rate, so the policy reaches the gold peak sooner",
     "c": "turning the clip off, so that PPO can escape the degenerate mode it is stuck in",
     "d": "more PPO epochs per batch, to fit each batch's advantages more closely"},
    "a",
    explanation="The proxy keeps paying for '!!!!' and for longer, stranger responses; nothing in "
                "a β = 0 objective charges for moving away from the reference, so the policy drifts "
                "as far as the reward model lets it (KL ≈ 18 nats at the end, vs 2.5 at β = 1). A KL "
                "penalty prices the drift; early stopping at the gold peak (a held-out gold or human "
                "check, never the proxy) stops before the regression. (b), (c) and (d) all make "
                "each update larger, which gets to the degenerate region faster.",
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
     "c": "VADER rewards \"!\", so the gold scorer itself pays for exclamation marks and is to "
          "blame for the spike",
     "d": "the value head over-estimates long responses"},
    "b",
    explanation="Early in training, a sample with '!' gets a much higher proxy than "
                "one without, while gold barely differs (6b). The reward model learnt the "
                "annotators' taste for '!' (documented: SimulatedAnnotator(bias='exclamation')); "
                "'!!' is the cheapest way to raise the proxy, and at β ≤ 0.3 nearly every response "
                "ends up with it. VADER does weight '!' slightly, which is why gold did not fall "
                "much here — with a stricter gold (a person), the same run would look worse.",
    feedback={"c": "compare the proxy gap and the gold gap of 6b: which scorer pays for '!'?"})

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
                "calls it over-regularisation. In RLHF, β = 1 kept KL near 2.5 nats and the proxy "
                "far below the other runs. Safe, and — past some point — useless.")

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
                "(case 1); with the clip but no penalty, every update stayed small, yet the "
                "policy drifted tens of nats from the reference and learnt to hack the reward "
                "model (cases 4 and 6). The clip is local (relative to π_old, per sample, per "
                "update); the penalty is global (relative to π_ref, over the whole run). "
                "Neither bounds what the other does.",
    feedback={"d": "the no-penalty run hacked the reward model *with* the clip on"})


def questions() -> list:
    """The notebook's questions, in notebook order (reads the stored logs)."""
    S, logs = plots.series, _logs()
    beta, eps100, cp_big = logs["beta"], logs["eps100"], logs["cp_big"]
    b0 = beta[0.0]
    gold0 = plots.rolling_mean(S(b0, "objective/gold_reward"), 5)
    early, late = _samples(b0[:10]), _samples(b0[-10:])
    cal = np.polyfit([s["proxy"] for s in early], [s["gold"] for s in early], 1)
    overpromise = float(np.mean(np.polyval(cal, [s["proxy"] for s in late]))
                        - np.mean([s["gold"] for s in late]))
    with_bang = [s["proxy"] for s in early if "!" in s["response"]]
    without = [s["proxy"] for s in early if "!" not in s["response"]]
    gap = float(np.mean(with_bang) - np.mean(without))
    max_kl = float(S(eps100, "losses/approx_kl").max())

    # the premises the texts above state; a regenerated log that breaks one must fail here
    assert S(eps100, "losses/entropy")[-5:].mean() < 0.05 * S(eps100, "losses/entropy")[0]
    assert max_kl > 1.0, "cases 1 and 8 say the no-clip run took an update above one nat"
    assert np.median(S(eps100, "losses/approx_kl")[:20]) > 0.1, "case 1: tenths of a nat"
    assert gap > 1.0 and overpromise > 0.05
    table = {b: (_tail(r, "objective/gold_reward"), _bang_fraction(r), _tail(r, "objective/kl"))
             for b, r in beta.items()}
    assert set(table) == {0.0, 0.02, 0.05, 0.1, 0.3, 1.0}, "case 3 names these six β"
    for b, (gold, bang, kl) in table.items():
        if b <= 0.3:      # "gold passes, but '!' and KL fail" (feedback a–e, explanation)
            assert gold >= GOLD_MIN and bang > 0.85 and kl > KL_MAX, (b, gold, bang, kl)
        else:             # β = 1: "KL within the limit, gold and '!' fail"
            assert gold < GOLD_MIN and BANG_MAX < bang < 0.75 and kl <= KL_MAX, (b, gold, bang, kl)
    assert not [b for b, (gold, bang, kl) in table.items()
                if gold >= GOLD_MIN and bang <= BANG_MAX and kl <= KL_MAX]

    return [
        C1_WHAT,
        Numeric(
            "c1_max_kl", "largest per-update approx_kl of the ε = 100 run", max_kl, rtol=0.05,
            unit="nats",
            explanation="Several times the doctor's line, log(1.3) ≈ 0.26, and more than thirty "
                        "times the per-update KL that PPO implementations target (0.01–0.03): "
                        "single updates moved the policy further than any trust region would allow, "
                        "which is exactly what the clip exists to prevent.",
            hint="the maximum of S(case1['ε = 100 (no clip)'], 'losses/approx_kl')"),
        Numeric(
            "c2_beta", "β above which PPO prefers B", (6.0 - 3.0) / (30 - 4), rtol=0.03,
            explanation="Set R_A − β·KL_A = R_B − β·KL_B: β = (6 − 3)/(30 − 4) ≈ 0.115. Above it "
                        "the shaped return of B is higher, so PPO raises B's probability although "
                        "the reward model ranks A higher. That is not a conflict to fix: the "
                        "objective is the reward *minus* the price of moving away from the "
                        "reference, and a reward gained by moving far (the hacked A) is charged "
                        "for it. In the sweep, only the largest β kept the '!' responses from "
                        "taking over.",
            hint="write the two KL-shaped returns and solve for the β where they are equal"),
        C3_CHOICE,
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
                        "mean gold, although the correlation between proxy and gold is still "
                        "high. A reward model can keep ranking well and still be mis-calibrated "
                        "off its training distribution: the proxy says 'much better', gold says "
                        "'somewhat better'. After deployment the same happens as inputs drift; "
                        "only fresh gold (human) labels on current outputs reveal it.",
            hint="np.polyfit on the early samples (x = proxy, y = gold), np.polyval on the late "
                 "proxies, then predicted mean minus actual mean"),
        C5_MONITOR,
        C6_CAUSE,
        Numeric(
            "c6_gap", "proxy gap with/without '!' on the first 10 iterations", gap, atol=0.1,
            rtol=0.0,
            explanation="A gap of this size early in training, with a gold gap close to zero, is "
                        "the bias that RL then amplifies: the reward model pays for '!' itself. "
                        "PPO then only has to find it.",
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
