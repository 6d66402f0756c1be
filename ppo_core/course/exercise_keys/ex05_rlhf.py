"""Answer key of exercises/05_rlhf.ipynb (chapter 05: RLHF with PPO)."""

from __future__ import annotations

import torch

from ...trainers import rlhf
from ..checker import FunctionCheck, MultipleChoice, Numeric
from ...kl_control import AdaptiveKLController


def _response_ids(g):
    """A (B, T) batch of sampled responses and the EOS id (random, so it cannot be
    hard-coded). The first five rows are the edge cases, then 0–3 random rows where EOS is
    common; the rows are shuffled:

    * EOS at position 0, ordinary tokens after it;
    * no EOS at all (the response hit the length limit);
    * EOS everywhere;
    * one EOS, then EOS padding to the end (pad == EOS, as for GPT-2);
    * one EOS, then ordinary tokens (a tokenizer whose pad is not EOS, or garbage)."""
    V = int(torch.randint(3, 9, (1,), generator=g))
    eos = int(torch.randint(0, V, (1,), generator=g))
    T = int(torch.randint(1, 9, (1,), generator=g))
    B = 5 + int(torch.randint(0, 4, (1,), generator=g))
    ids = torch.randint(0, V - 1, (B, T), generator=g)
    ids = ids + (ids >= eos).long()                        # ordinary tokens: never EOS
    k = torch.randint(0, T, (2,), generator=g).tolist()
    ids[0, 0] = eos
    ids[2] = eos
    ids[3, k[0]:] = eos
    ids[4, k[1]] = eos
    ids[5:] = torch.where(torch.rand(B - 5, T, generator=g) < 0.3, eos, ids[5:])
    return ids[torch.randperm(B, generator=g)], eos


def _mask_inputs(g):
    return _response_ids(g)


def _reward_inputs(g):
    ids, eos = _response_ids(g)
    mask = rlhf.response_mask(ids, eos)                    # (B, T) bool, ≥ 1 token per row
    B, T = mask.shape
    logp = -torch.rand(B, T, generator=g) * 3
    ref = -torch.rand(B, T, generator=g) * 3
    garbage = torch.randn(2, B, T, generator=g) * 10       # off the mask: must not leak in
    logp = torch.where(mask, logp, garbage[0])
    ref = torch.where(mask, ref, garbage[1])
    scores = torch.randn(B, generator=g) * 2
    beta = float(torch.rand((), generator=g)) * 0.5
    if int(torch.randint(4, (1,), generator=g)) == 0:
        beta = 0.0                                         # no penalty: only the score is left
    return (scores, logp, ref, mask, beta)


MASK = FunctionCheck(
    "mask", "Response mask: up to and including the first EOS.",
    reference=rlhf.response_mask, make_inputs=_mask_inputs,
    explanation="With pad = EOS, every token after the first EOS is padding that the policy "
                "never chose; the first EOS itself *was* chosen (it ended the review), so it "
                "stays in the loss and carries the reward-model score. A row with no EOS ran "
                "to the length limit and keeps every token; a row that starts with EOS keeps "
                "exactly one.",
    hint="Count the EOS tokens strictly before position t: cumsum of (ids == eos) minus the "
         "token itself.")

REWARDS = FunctionCheck(
    "rewards", "Per-token reward: −β·k1 everywhere, plus the score at the last token.",
    reference=lambda s, lp, rf, m, b: rlhf.token_rewards(s, lp, rf, m, b)[0],
    make_inputs=_reward_inputs,
    explanation="Each token pays −β·(log π − log π_ref) for drifting from the reference, and "
                "only the last token of the episode receives the reward model's verdict: "
                "GAE carries it back to the earlier tokens. A one-token response gets both on "
                "the same token; whatever the log-probs hold off the mask never reaches a reward.",
    hint="The last response token of row b sits at index mask[b].sum() − 1; entries off the "
         "mask must be exactly 0, whatever logp holds there.")

OFFBYONE = MultipleChoice(
    "offbyone", "ids has P prompt tokens then T response tokens. Which logits score ids[:, P:]?",
    options={"a": "logits[:, P:]", "b": "logits[:, P-1:P+T]", "c": "logits[:, :T]",
             "d": "logits[:, P-1:-1]"},
    correct="d",
    explanation="A causal LM's logits at position t are its prediction for the token at t+1, "
                "so the response tokens at P..P+T−1 are scored by positions P−1..P+T−2.",
    feedback={"a": "logits[:, P] already predicts the token at P+1: every token would be scored "
                   "by a distribution that has seen it.",
              "b": "That slice holds T + 1 positions: the logits at the last position score a "
                   "token that is not in ids.",
              "c": "Those start at the first prompt token: position 0 scores token 1."})

KL_START = Numeric(
    "kl_start", "What is objective/kl (nats per sequence) in the record of iteration 1?",
    value=0.0, atol=1e-9, rtol=0.0,
    explanation="The responses of iteration 1 are scored before any update, with π = π_ref "
                "bit for bit, so every per-token log-ratio is exactly zero.",
    hint="Which weights have changed before the first rollout is scored?")

EPISODE_RETURN = Numeric(
    "episode_return", "logp = [−1.2, −0.4, −2.0], ref_logp = [−1.0, −0.9, −2.5], β = 0.1, reward "
    "model score R = 1.5 (three response tokens, all in the mask). What is Σ_t r_t?",
    value=1.42, atol=1e-6, rtol=0.0,
    explanation="k1 = [−0.2, 0.5, 0.5] sums to 0.8 nats, so Σ r_t = R − β·KL = 1.5 − 0.08 = 1.42: "
                "the RLHF objective E[R] − β·KL, one episode at a time.",
    hint="Σ r_t = R − β Σ_t (logp_t − ref_logp_t).")

ADAPTIVE_BETA = Numeric(
    "adaptive_beta", "Adaptive β: β = 0.1, target 6 nats, measured KL 12 nats over 64 episodes, "
    "horizon 10,000. What is the next β?",
    value=AdaptiveKLController(0.1, 6.0, 10_000).update(12.0, 64), atol=5e-6, rtol=0.0,
    explanation="e = clip(12/6 − 1, −0.2, 0.2) = 0.2, so β ← 0.1·(1 + 0.2·64/10000) = 0.100128. "
                "The controller moves slowly on purpose: one noisy batch cannot swing β.",
    hint="The error is clipped to ±0.2 before it is used.")

DIAGNOSE_HACKING = MultipleChoice(
    "diagnose_hacking", "A 60-iteration run with β = 0 and lr 1e-3 against the reward model whose "
    "annotators liked '!' (chapter 05's hack run): proxy −0.03 → 3.1, gold 0.10 → −0.9 "
    "(seeds 0 and 2; −0.1 on seed 1), '!' per response 0.1 → about 10, repeated words 1% → "
    "about 40%, KL 0 → 64–114 nats. What is happening, and what is the first fix?",
    options={"a": "The value head is underfitting the returns: raise vf_coef so that the critic "
                  "catches up.",
             "b": "The learning rate is too low for the proxy to keep rising: raise it.",
             "c": "Reward hacking of the reward model's bias: put β > 0 back and fix the "
                  "preference data.",
             "d": "The clip range is too small for the policy to leave its current mode: "
                  "raise ε."},
    correct="c",
    explanation="Over-optimisation of a learned proxy (Gao et al. 2022): while the policy still "
                "wrote reviews, raising the proxy raised gold too; past the peak it kept the "
                "proxy up by what the reward model over-values ('!') and by loops, which the "
                "gold judge, a simulated reader, marks down. The KL penalty keeps the policy "
                "where the reward model was trained (β = 1 in the chapter kept gold near 0.45 "
                "with a few nats of KL); better preference data removes the bias itself. The "
                "bias is not the whole story: pushed far enough, a policy over-optimises any "
                "learned reward model; the bias decides what the hack looks like.",
    feedback={"a": "A poor critic slows learning; it does not make the proxy and gold disagree.",
              "b": "The proxy rose fast: learning is not the problem, *what* is learned is.",
              "d": "ε bounds each step; 64–114 nats of KL with β = 0 shows nothing pulls back."})

LARGE_BETA = MultipleChoice(
    "large_beta", "With β = 5, proxy and gold rise far less than at β = 0.05 and the KL "
    "stays a small fraction of that run's. Why?",
    options={"a": "The clipped surrogate stops every update once β > 1, so the policy is "
                  "frozen.",
             "b": "β·KL outweighs any gain in reward, so the optimum of E[R] − β·KL is ≈ π_ref.",
             "c": "GAE cannot carry the reward back to the earlier tokens when γ = 1.",
             "d": "The reward model gives the same score to every response it is shown."},
    correct="b",
    explanation="The KL-regularised optimum is π* ∝ π_ref·exp(R/β): as β grows it collapses to "
                "π_ref. β trades reward against staying close to the reference.",
    feedback={"a": "The clip acts on the ratio to π_old, whatever β is.",
              "c": "γ = 1 is the usual choice for tokens; GAE works fine.",
              "d": "The same reward model drives the β = 0.05 run, where the reward rises."})


def questions() -> list:
    """The notebook's questions, in notebook order."""
    return [MASK, REWARDS, OFFBYONE, KL_START, EPISODE_RETURN, ADAPTIVE_BETA, DIAGNOSE_HACKING,
            LARGE_BETA]
