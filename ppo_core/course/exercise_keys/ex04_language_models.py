"""Answer key of exercises/04_language_models.ipynb (chapter 04: language models as policies).

`questions()` loads the tiny GPT-2 (cached after the first build) to compute the answer of
exercise 3, the log-probability of a response under that model.
"""

from __future__ import annotations

import torch

from ...lm import models
from ..checker import FunctionCheck, MultipleChoice, Numeric
from ...masking import logprobs_from_logits
from ...value_head import position_ids_from_mask


def _lm_inputs(g):
    B = int(torch.randint(1, 5, (1,), generator=g))
    T = int(torch.randint(2, 9, (1,), generator=g))
    V = int(torch.randint(3, 12, (1,), generator=g))
    logits = torch.randn(B, T, V, generator=g) * 2
    ids = torch.randint(0, V, (B, T), generator=g)
    return (logits, ids), {}


EX1_SHIFT = FunctionCheck(
    "ex1_shift", "log-probabilities of the tokens of a sequence",
    reference=lambda logits, ids: logprobs_from_logits(logits[:, :-1], ids[:, 1:]),
    make_inputs=_lm_inputs,
    explanation="logits[:, t] is the policy at state x_{≤t}; it scores the next token "
                "ids[:, t+1]. The first token has no log-prob (nothing predicts it) and the "
                "last logits score a token that is not in the sequence, hence T−1 outputs. "
                "This is ppo_core.masking.logprobs_from_logits(logits[:, :-1], ids[:, 1:]).",
    hint="log_softmax over the last axis, then gather the ids; mind which position scores "
         "which token.")


def _mask_inputs(g):
    B = int(torch.randint(1, 6, (1,), generator=g))
    T = int(torch.randint(2, 10, (1,), generator=g))
    pads = torch.randint(0, T, (B,), generator=g)                    # left padding per row
    mask = (torch.arange(T)[None, :] >= pads[:, None]).long()
    return (mask,), {}


EX2_POSITIONS = FunctionCheck(
    "ex2_positions", "position ids for a left-padded batch",
    reference=position_ids_from_mask, make_inputs=_mask_inputs,
    explanation="pos = cumsum(mask) − 1, clamped at 0 on the padding: the first real token of "
                "each row is at position 0, as it was in pre-training. Without this a left-"
                "padded row is read as if its text started later, and its log-probs change.",
    hint="cumsum along the time axis; padding positions should be 0.")


def _pair_inputs(g):
    n = int(torch.randint(1, 30, (1,), generator=g))
    return (torch.randn(n, generator=g) * 2, torch.randn(n, generator=g) * 2), {}


EX4_BT_LOSS = FunctionCheck(
    "ex4_bt_loss", "the pairwise (Bradley-Terry) reward-model loss",
    reference=lambda rc, rr: -torch.nn.functional.logsigmoid(rc - rr).mean(),
    make_inputs=_pair_inputs, grad_wrt=(0, 1),
    explanation="L = −mean log σ(R(chosen) − R(rejected)). It only sees differences, so the "
                "reward model's scores are defined up to a constant (ppo_core shifts them to "
                "mean 0 on the corpus). logsigmoid is stable where log(sigmoid(x)) underflows.",
    hint="torch.nn.functional.logsigmoid; the gradient must match too.")

EX5_ANNOTATOR = Numeric(
    "ex5_annotator", "P(a ≻ b) for gold scores 0.6 and 0.2 at τ = 0.1",
    value=float(torch.sigmoid(torch.tensor((0.6 - 0.2) / 0.1))), atol=2.5e-3, rtol=0.0,
    explanation="σ((0.6 − 0.2)/0.1) = σ(4) ≈ 0.982. At τ = 1 the same pair would be ordered "
                "correctly only σ(0.4) ≈ 60% of the time.",
    hint="Bradley-Terry: a sigmoid of the utility difference over the temperature.")

EX6_KL_ESTIMATORS = MultipleChoice(
    "ex6_kl_estimators", "Which estimator of the per-token KL can be negative on one token?",
    options={"a": "k1 = log π − log π_ref = −d",
             "b": "k2 = ½ (log π − log π_ref)² = ½ d²",
             "c": "k3 = (π_ref/π − 1) − log(π_ref/π) = (e^d − 1) − d",
             "d": "none of them"},
    correct="a",
    explanation="k1 is unbiased but a single sampled token can be more likely under the "
                "reference than under the policy, which makes it negative; only its average "
                "is a KL. k2 and k3 are ≥ 0 on every token (k3 because e^d − 1 ≥ d).",
    feedback={"b": "A square is never negative.",
              "c": "e^d − 1 − d is never negative: e^d ≥ 1 + d.",
              "d": "A mean that is positive does not make every token positive: count the "
                   "negative tokens, (kl_estimate(lp, lr, kind)[keep] < 0).float().mean()."})

EX7_HACK = MultipleChoice(
    "ex7_hack", "PPO maximises the reward model trained on the biased annotator, with β = 0. "
                "What do you expect?",
    options={"a": "the policy writes better reviews, and only that raises the proxy reward",
             "b": "the proxy cannot rise: the reward model was trained on a fixed set of texts",
             "c": "the proxy rises, mostly through the '!' that the biased annotators' taste "
                  "pays for",
             "d": "the policy stops producing EOS, since longer responses collect more reward"},
    correct="c",
    explanation="The proxy pays for '!' whatever the sentiment; the gold score does not (VADER "
                "even makes complaints more negative with '!!!'). With nothing holding the "
                "policy near the reference, it learns the cheapest way to raise the proxy: "
                "reward hacking. Chapter 05 shows it, shows that a lexicon like VADER can be "
                "fooled by the same degenerate text, and puts the KL penalty back.",
    feedback={"a": "Only if the proxy were faithful: compare the lift of '!!!' for both above.",
              "b": "The policy produces new texts; the reward model scores any text.",
              "d": "Nothing in the reward pays for never stopping: the reward model scores the "
                   "finished text, so the policy still ends its responses (with '!' in them)."})

PROMPT, RESPONSE = "The battery life", " is excellent."


def _seq_logprob() -> Numeric:
    model, tok = models.load_policy("tiny", device="cpu")
    enc = tok(PROMPT + RESPONSE, return_tensors="pt")
    with torch.no_grad():
        lp = logprobs_from_logits(model(**enc).logits[:, :-1], enc["input_ids"][:, 1:])
    P = len(tok(PROMPT)["input_ids"])
    return Numeric(
        "ex3_seq_logprob", "log π(response | prompt) under the tiny GPT-2",
        value=float(lp[0, P - 1:].sum()), atol=1e-3, rtol=1e-4,
        explanation="Sum of the response tokens' log-probs: positions P−1 … T−2 of the shifted "
                    "log-prob tensor (the logits at the last prompt token score the first "
                    "response token).",
        hint="Encode prompt + response together, shift, then keep only the response tokens.")


def questions() -> list:
    """The notebook's questions, in notebook order (loads the tiny GPT-2)."""
    return [EX1_SHIFT, EX2_POSITIONS, _seq_logprob(), EX4_BT_LOSS, EX5_ANNOTATOR,
            EX6_KL_ESTIMATORS, EX7_HACK]
