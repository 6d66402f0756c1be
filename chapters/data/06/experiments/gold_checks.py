"""Issue 15's checks of the gold judge and the reward models, with numbers.

    HF_HUB_OFFLINE=1 python chapters/data/06/experiments/gold_checks.py [--threads 1]

(a) Spearman rank correlation of `gold_score` with VADER's compound score on 3,000 corpus
    sentences (a corpus seed no model uses), and mean gold by VADER class.
(b) Gold of the degenerate late samples of chapters/data/06/beta_0_long.jsonl (a β = 0
    run made under the VADER-only gold) against its first iterations, and against 512
    fresh samples of the initial policy (the reference policy).
(c) '!' indifference: gold change when a corpus sentence's '.' becomes '!', '!!', '!!!'
    or gets '!' appended.
Reward models: their '!' effect (`_exclamation_effect`, normalised units and raw), their
normalisation (gain, shift) and the mean / std of their scores on 512 fresh initial-policy
samples (a sampling seed other than the build's).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ppo_core.lm import reward, text

ROOT = Path(__file__).resolve().parent.parent


def ranks(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share the mean position)."""
    order = torch.argsort(x, stable=True)
    r = torch.empty(len(x), dtype=torch.float64)
    r[order] = torch.arange(len(x), dtype=torch.float64)
    for v in torch.unique(x):
        tied = x == v
        r[tied] = r[tied].mean()
    return r


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([ranks(a), ranks(b)]))[0, 1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    out: dict = {}

    # (a) order on corpus sentences
    corpus = text.build_corpus(3000, seed=99)
    g = reward.gold_score(corpus)
    v = torch.tensor([reward._vader().polarity_scores(t)["compound"] for t in corpus])
    out["a_spearman_vs_vader"] = spearman(g, v)
    out["a_pearson_vs_vader"] = float(torch.corrcoef(torch.stack([g, v]))[0, 1])
    out["a_mean_gold_by_vader_class"] = {
        "positive (v > 0.05)": float(g[v > 0.05].mean()),
        "neutral (|v| <= 0.05)": float(g[v.abs() <= 0.05].mean()),
        "negative (v < -0.05)": float(g[v < -0.05].mean())}
    out["a_corpus_sentences_with_a_defect"] = float(
        (torch.stack([c for k, c in reward.gold_components(corpus).items()
                      if k != "sentiment"]).sum(0) > 0).float().mean())

    # (b) degenerate vs reference samples
    recs = [json.loads(line) for line in open(ROOT / "chapters/data/06/beta_0_long.jsonl")]

    def texts(lo, hi):
        return [s["prompt"] + s["response"] for r in recs[lo:hi] for s in r["samples"]]

    early, late = texts(0, 5), texts(80, 120)
    fresh = reward.initial_policy_texts(512, seed=2024)
    gf = reward.gold_score(fresh)
    out["b_beta_0_long_first_5_iterations"] = {"n": len(early),
                                               "gold": float(reward.gold_score(early).mean()),
                                               "vader_gold_logged": sum(s["gold"] for r in recs[:5] for s in r["samples"]) / len(early)}
    out["b_beta_0_long_iterations_81_120"] = {"n": len(late),
                                              "gold": float(reward.gold_score(late).mean()),
                                              "gold_max": float(reward.gold_score(late).max()),
                                              "vader_gold_logged": sum(s["gold"] for r in recs[80:120] for s in r["samples"]) / len(late)}
    out["b_initial_policy_fresh_samples"] = {"n": len(fresh), "gold": float(gf.mean()),
                                            "gold_std": float(gf.std())}
    out["b_examples"] = [{"text": t, "gold": float(reward.gold_score([t])[0])}
                         for t in late[::40] + early[:2]]

    # (c) '!' indifference
    plain = [t for t in text.build_corpus(1000, seed=12) if t.endswith(".") and "!" not in t]
    base = reward.gold_score(plain)
    out["c_exclamation"] = {"n": len(plain)}
    for end in ("!", "!!", "!!!"):
        out["c_exclamation"][f"'.' -> '{end}' max |Δgold|"] = float(
            (reward.gold_score([t[:-1] + end for t in plain]) - base).abs().max())
    out["c_exclamation"]["append '!' max |Δgold|"] = float(
        (reward.gold_score([t + "!" for t in plain]) - base).abs().max())
    out["c_exclamation"]["'.' -> '!!!!!!' mean Δgold"] = float(
        (reward.gold_score([t[:-1] + "!!!!!!" for t in plain]) - base).mean())

    # reward models
    fresh_rm = reward.initial_policy_texts(512, seed=4242)
    for bias in (None, "exclamation"):
        rm = reward.load_reward_model(bias, device="cpu")
        s = rm.score(fresh_rm)
        eff = reward._exclamation_effect(rm)
        out[f"rm_{bias or 'none'}"] = {
            "exclamation_effect_normalised": eff, "exclamation_effect_raw": eff / rm.gain,
            "gain": rm.gain, "shift": rm.shift,
            "build_normalisation": rm.metrics.get("normalisation"),
            "fresh_initial_samples_mean": float(s.mean()), "fresh_initial_samples_std": float(s.std()),
            "gold_agreement": rm.metrics["gold_agreement"],
            "path": str(reward.reward_model_path(bias))}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
