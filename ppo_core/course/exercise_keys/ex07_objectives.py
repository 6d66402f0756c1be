"""Answer key of exercises/07_objectives.ipynb (chapter 07: from PPO to today's objectives).

The implementations are checked against `ppo_core.advantages` and `ppo_core.losses` on random
inputs that always include the edge cases; the one number read from data is computed from the
runs stored in `chapters/data/07/` when `questions()` runs, so it stays right when they are
regenerated. Free-text parts (`FreeText`) come with a rubric and a model answer that the learner
compares against; nothing grades them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ...advantages import group_advantages, rloo_advantages
from ...losses import dpo_loss
from ..checker import FreeText, FunctionCheck, MultipleChoice, Numeric

#: the KL budget of question 7, nats per response (the chapter's final evaluation)
KL_BUDGET = 10.0


def _root() -> Path:
    for p in Path(__file__).resolve().parents:
        if (p / "chapters" / "data" / "07").is_dir():
            return p
    raise FileNotFoundError("exercise 07 needs chapters/data/07 of the course repository")


# ------------------------------------------------------------------ implementations

def _group_inputs(g: torch.Generator):
    """Scores `(n·G,)` of n prompts, G samples each; the edge cases come first: G = 2, one
    group, groups whose scores are all equal (a 0/1 reward that every sample got right), a
    G that is not a power of two, large and negative scores."""
    trial = int(torch.randint(0, 10_000, (1,), generator=g))
    G = [2, 3, 4, 8, 5][trial % 5]
    n = 1 + int(torch.randint(0, 5, (1,), generator=g))
    scores = torch.randn(n * G, generator=g) * (1 + 10 * float(torch.rand(1, generator=g)))
    if trial % 3 == 0:                                    # a 0/1 verifiable reward
        scores = (torch.rand(n * G, generator=g) < 0.5).float()
    if trial % 4 == 0:                                    # one group where all agree
        scores[:G] = scores[0]
    return (scores, G), {}


def _dpo_reference(lc, lr, rc, rr, beta):
    return dpo_loss(lc, lr, rc, rr, beta)[0]


def _dpo_inputs(g: torch.Generator):
    """Sequence log-probs of b pairs (negative, tens of nats), the reference's near them,
    and β in [0.01, 1]; sometimes π = π_ref exactly (the loss is log 2)."""
    b = 1 + int(torch.randint(0, 6, (1,), generator=g))
    lc, lr = -20 * torch.rand(b, generator=g), -20 * torch.rand(b, generator=g)
    same = bool(torch.rand(1, generator=g) < 0.2)
    rc = lc.clone() if same else lc + torch.randn(b, generator=g)
    rr = lr.clone() if same else lr + torch.randn(b, generator=g)
    beta = float(0.01 + torch.rand(1, generator=g))
    return (lc, lr, rc, rr, beta), {}


# ------------------------------------------------------------------ multiple choice

K1_LOSS = MultipleChoice(
    "k1_loss", "Why does the trainer refuse kl_in='loss' with the k1 estimator?",
    {"a": "k1 is negative on some tokens, and a loss that can fall below zero makes Adam unstable",
     "b": "k1's value is a biased estimate of the KL, so the penalty would be too weak",
     "c": "differentiated with the samples held fixed, k1's expected gradient is zero",
     "d": "k1 needs the reference's probabilities over the whole vocabulary, not only the "
          "sampled token's"},
    "c",
    explanation="∇_θ E_{y∼π}[log π_θ(y) − log π_ref(y)] with y held fixed is E_π[∇ log π_θ(y)] = 0: "
                "the score function has mean zero, so k1 in the loss adds noise and no pull "
                "towards π_ref. Chapter 02 computed it exactly. In the *reward*, k1 works because the "
                "policy gradient multiplies it by ∇ log π (a score-function estimator), which gives "
                "∇KL(π‖π_ref). In the loss, k2 = ½(log π − log π_ref)² has that same gradient and k3 "
                "(GRPO's) has the reverse KL's.",
    feedback={"a": "a negative loss is no problem for Adam; what is the gradient of k1?",
              "b": "k1 is unbiased for the KL's *value*; the trouble is its gradient",
              "d": "all three estimators use only the sampled token's log-probabilities"})

GROUP_BASELINE = MultipleChoice(
    "group_baseline", "What do GRPO and RLOO replace, and what does it cost them?",
    {"a": "they replace the reward model with the group's mean score, so they need preference "
          "labels at training time",
     "b": "they replace the critic with the other samples of the same prompt, so every prompt "
          "must be sampled G ≥ 2 times",
     "c": "they replace the reference model, so they cannot be kept near π_ref",
     "d": "they replace the clipped surrogate with plain REINFORCE, so they can take only one "
          "gradient step per batch of samples"},
    "b",
    explanation="The baseline of a response is the mean score of its siblings (GRPO: all G, then "
                "divided by their std; RLOO: the other G − 1), so no value network is trained or "
                "run: one model fewer in memory and no critic pass. The price is G samples per "
                "prompt, and a baseline that only knows the prompt, not the state at each token: "
                "every token of a response gets the same advantage. They keep the reward model, "
                "the reference and (GRPO) the clipped surrogate, as the trainer's options show.",
    feedback={"a": "both still score responses with the reward model (or a verifier)",
              "c": "GRPO keeps π_ref and puts β·KL into the loss",
              "d": "GRPO uses PPO's clipped ratio and several steps per batch"})

CHOOSE_VERIFIABLE = MultipleChoice(
    "choose_verifiable",
    "Team 1: code generation with unit tests as the reward, long answers, the GPUs hold the "
    "policy and a reference but not a critic of the same size. Which objective?",
    {"a": "PPO with a value model as large as the policy, for token-level credit assignment",
     "b": "DPO on pairs of past answers labelled by the tests",
     "c": "supervised fine-tuning on the answers that passed, and no RL at all",
     "d": "GRPO or RLOO: G answers per prompt scored by the tests, no critic"},
    "d",
    explanation="A verifier gives a reliable scalar reward for any fresh sample, so online RL can "
                "use it without a learned reward model, and a group baseline needs no critic: "
                "policy + reference fit. It is the setting of DeepSeek-R1's GRPO training with "
                "rule-based rewards (DeepSeek-AI 2025), which Dr. GRPO and DAPO refine. PPO with a critic (a) is what VAPO does for long "
                "reasoning when the memory is there; here it is not. Offline DPO (b) and "
                "rejection-sampling SFT (c) would waste the verifier's ability to score new samples.",
    feedback={"a": "the constraint says a critic of that size does not fit",
              "b": "a verifier can score every new sample: why stay offline?",
              "c": "a reasonable baseline, but it ignores the failures and the reward's scale"})

CHOOSE_OFFLINE = MultipleChoice(
    "choose_offline",
    "Team 2: 30,000 human preference pairs, no reward model, no inference servers for sampling "
    "during training, two weeks. Which objective?",
    {"a": "DPO on the pairs, with the SFT model as π_ref",
     "b": "PPO against a reward model they first train on the pairs",
     "c": "GRPO with the pairs' labels as the reward",
     "d": "RLOO with G = 2, one sample per side of each pair"},
    "a",
    explanation="DPO trains on the fixed pairs with two models (policy and reference, whose "
                "log-probs can even be precomputed), no sampling loop and no reward model. It is "
                "offline: it never sees what the trained policy generates, and Tang et al. (2024) "
                "found online methods ahead at equal KL in a controlled study; chapter 07's bench "
                "shows the same trade on a small scale. Under these constraints it is still the "
                "one that can ship.",
    feedback={"b": "that needs a sampling loop during training, which they do not have",
              "c": "GRPO samples G responses per prompt during training",
              "d": "RLOO is online too: it samples during training"})

CHOOSE_CRITIC = MultipleChoice(
    "choose_critic",
    "Team 3: long chain-of-thought answers with a final-answer check, memory for a critic, and "
    "few samples per prompt affordable (each is thousands of tokens). Which objective?",
    {"a": "DPO on pairs of earlier answers, because offline training is the cheapest per step",
     "b": "GRPO with G = 2, the smallest group",
     "c": "PPO with a value model and GAE, as VAPO does for long reasoning",
     "d": "RLOO with G = 16 and no reference"},
    "c",
    explanation="A critic gives a per-token baseline from one sample per prompt, where a group "
                "baseline needs several; with long, expensive samples that matters, and VAPO (Yue "
                "et al. 2025) reports value-model PPO beating value-free DAPO on AIME 2024 with the "
                "same base model. It costs a model and a pass more (the chapter's cost table). G = 2 "
                "(b) gives the noisiest group baseline there is; G = 16 (d) is what they cannot afford.",
    feedback={"a": "offline pairs cannot use the final-answer check on new samples",
              "b": "with G = 2 each response's baseline is one other sample",
              "d": "the constraint says few samples per prompt"})

DRIFT_SIGNAL = MultipleChoice(
    "drift_signal",
    "Months after release, the live proxy reward is up and complaints are up too. Which signal "
    "tells you the reward model has drifted from what the policy now writes?",
    {"a": "the PPO clip fraction and approx_kl of the last training run, compared with the run "
          "before it",
     "b": "agreement of the reward model with fresh human labels on current outputs, tracked "
          "over time",
     "c": "the reward model's accuracy on its original validation pairs, recomputed after every "
          "deployment",
     "d": "the mean proxy reward of live traffic, which rises as the policy improves"},
    "b",
    explanation="The reward model was fitted on the reference policy's outputs (chapter 04: its "
                "texts were corpus sentences and the tiny GPT-2's samples); the policy moved away "
                "from them, and users moved too. Its old validation pairs (c) come from the old "
                "distribution; the proxy (d) is the thing being exploited; the clip fraction (a) is "
                "about single updates. Only fresh labels on *current* outputs measure the gap, and "
                "the policy's KL to the reference on live prompts says how far outside the reward "
                "model's data it is.",
    feedback={"a": "these describe single PPO updates of a past run, not the reward model's "
                   "error on what the policy writes today",
              "c": "those pairs come from the old outputs: the reward model can still rank them "
                   "well while it mis-scores the new ones",
              "d": "a proxy that rises while complaints rise is the symptom, not the measurement"})


BLUEPRINT_RUBRIC = (
    "names the objective and says why, given the data (20,000 reviewed pairs) and the memory "
    "(three copies: policy, reference and a reward model leave no room for a critic)",
    "names the reference (the SFT model trained on approved agent replies) and keeps it frozen",
    "gives β or a KL budget in nats per response, and how it will be held (adaptive β or early stop)",
    "gives the update size: ε (0.1–0.2, tighter than usual for a regulated product) and a "
    "target_kl for a clipped online method, or DPO's β and learning rate",
    "lists the doctor's alerts to act on: KL blow-up, entropy collapse, reward hacking, negative KL, "
    "a KL of exactly 0",
    "says what to log: proxy and an independent gold or human score, KL, entropy, clip fraction, "
    "samples, refusal and escalation rates",
    "lists what to red-team before release: regulated advice, personal data, promises the bank "
    "cannot keep, the reward model's known biases (length, '!', flattery)",
    "keeps a held-out human evaluation as the release gate, not the proxy",
)

BLUEPRINT_MODEL = (
    "Objective: train a reward model on 18,000 of the 20,000 reviewed pairs (2,000 held out to "
    "measure its agreement with the reviewers), then RLOO with G = 4 against it: policy, frozen "
    "reference and reward model are the three copies the GPUs hold, so a PPO critic does not fit, "
    "and online sampling spent KL better than offline DPO on chapter 07's bench. Fallback if the "
    "reward model's held-out agreement is poor or no sampling loop is ready within the month: DPO "
    "on the 20,000 pairs (two copies), β = 0.1. Reference: the SFT model trained on approved "
    "agent replies, frozen; a small ptx term on those approved replies keeps the policy close to "
    "the approved language. KL: β = 0.05 in the reward with an adaptive controller holding "
    "≈ 5 nats per reply; stop when held-out human scores stop rising even if the proxy keeps "
    "going. Update size: ε = 0.1, target_kl 0.02 per update. Alerts (ppo_core doctor on every "
    "run): KL blow-up, entropy collapse (replies turning formulaic), reward hacking (proxy up, "
    "human score flat), negative KL (an alignment bug), a KL of exactly zero (a reference that is "
    "not frozen). Log: proxy and human-rated gold on a fixed panel, KL, entropy, clip fraction, "
    "response length, refusal/escalation rates and sampled replies every iteration. Red-team "
    "before release: requests for investment advice, personal data leaks, promises of refunds "
    "or outcomes the bank does not offer, prompt injection, and the reward model's known biases "
    "(length, politeness formulas). Release gate: a blind human evaluation against the SFT model "
    "with compliance review; the proxy never decides release.")

DRIFT_RUBRIC = (
    "says why it drifts: the reward model learnt from the reference's outputs, and the policy "
    "(and the users) moved away from them",
    "measures it: fresh human labels on current outputs vs the reward model, and the KL of live "
    "outputs to the reference",
    "acts on it: relabel current outputs, retrain or recalibrate the reward model, then re-run RL "
    "from a checkpoint with β or a KL budget re-set",
    "names a trigger (a threshold on agreement or KL) and a rollback plan",
)

DRIFT_MODEL = (
    "The reward model was trained on comparisons of the reference policy's outputs (and, in "
    "this course, corpus sentences); after RLHF the "
    "policy writes differently (the KL to the reference is the distance), and live prompts drift "
    "too, so the reward model now scores text unlike anything it was trained on, where its errors "
    "are largest and the policy has been pushed to find them. Measure monthly: label a sample of "
    "current outputs with people, compare the labels with the reward model's ordering (agreement "
    "and calibration), and track the KL of live outputs to the reference. When agreement falls "
    "below the level measured at release (or the KL leaves the range seen in training), relabel "
    "current outputs, retrain the reward model on old plus new pairs, and re-run a short RL phase "
    "from the deployed checkpoint with a fresh KL budget; keep the previous model ready to roll "
    "back to.")


def _best_gold_within_budget() -> float:
    """The best seed-mean gold among the frontier's (method, β) settings whose seed-mean KL is
    within the budget: one seed's maximum would reward noise."""
    man = json.loads((_root() / "chapters" / "data" / "07" / "manifest.json").read_text())
    settings: dict = {}
    for e in man.values():
        if e["group"] == "frontier":
            settings.setdefault((e["method"], e["config"]["beta"]), []).append(e["eval"])
    within = [sum(x["gold"] for x in evs) / len(evs) for evs in settings.values()
              if sum(x["kl"] for x in evs) / len(evs) <= KL_BUDGET]
    assert within, f"no frontier setting ended within {KL_BUDGET} nats: question 7 needs one"
    return max(within)


def questions() -> list:
    """The notebook's questions, in notebook order (reads chapters/data/07/manifest.json)."""
    return [
        FunctionCheck(
            "rloo", "RLOO advantages", rloo_advantages, _group_inputs,
            explanation="Â_i = R_i − (Σ_j R_j − R_i)/(G − 1): the baseline leaves the response "
                        "itself out, so it does not depend on the response and the gradient stays "
                        "unbiased (Kool et al. 2019). It equals G/(G−1)·(R_i − mean). A group whose "
                        "scores all agree gets 0: nothing to learn from it.",
            hint="reshape to (B/G, G); the sum of the others is the row sum minus the element"),
        FunctionCheck(
            "grpo", "GRPO advantages", group_advantages, _group_inputs,
            explanation="(R_i − mean)/(std + 1e-4) within each group, with the sample std "
                        "(Bessel's G − 1, as torch.std and TRL compute it). Dividing by the std "
                        "gives every prompt the same weight whatever its spread, which is the "
                        "bias Dr. GRPO removes (advantage='dr_grpo').",
            hint="torch.std uses G − 1 by default; add 1e-4 to the std before dividing"),
        Numeric(
            "rloo_hand", "RLOO advantage of response 1", 1.0, rtol=0.01,
            explanation="1 − (0 + 0 + 0)/3 = 1. With a 0/1 reward, a correct answer gains more "
                        "when fewer of its siblings were right (two of four right: 2/3)."),
        Numeric(
            "grpo_hand", "GRPO advantage of response 1", 0.75 / 0.5, rtol=0.01,
            explanation="mean 0.25, sample std √((0.75² + 3·0.25²)/3) = 0.5, so (1 − 0.25)/0.5 = "
                        "1.5 (the population std, 0.433, would give 1.73). Dr. GRPO gives this "
                        "response 0.75: dividing by the std of a group with one success in four "
                        "doubles it, so GRPO's weight on a prompt depends on its success rate.",
            hint="torch.std divides by G − 1 (the sample std)"),
        FunctionCheck(
            "dpo", "the DPO loss", _dpo_reference, _dpo_inputs, grad_wrt=(0, 1),
            explanation="−mean log σ(β[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))]). "
                        "Its gradient raises log π(y_w) and lowers log π(y_l), weighted by σ(−h): "
                        "pairs the policy already orders correctly by a wide margin count little. "
                        "At π = π_ref the loss is log 2.",
            hint="torch.nn.functional.logsigmoid is the stable log σ; the reference terms are "
                 "constants"),
        K1_LOSS,
        GROUP_BASELINE,
        Numeric(
            "frontier_best", f"highest seed-mean gold within {KL_BUDGET:g} nats",
            _best_gold_within_budget(), atol=0.005, rtol=0.0,
            explanation="Read the frontier as a budget: among the settings whose runs ended within "
                        "the KL budget on average, the best mean gold. Which method and β reached "
                        "it is in the table, but PPO's and RLOO's best settings differ by less than "
                        "their two seeds do: the budget picks a region of the curve, not a winner.",
            hint="group the rows by (method, β), average gold and KL over the two seeds, keep "
                 "the settings with mean KL ≤ 10 and take the largest mean gold"),
        CHOOSE_VERIFIABLE,
        CHOOSE_OFFLINE,
        CHOOSE_CRITIC,
        FreeText("blueprint", "A blueprint for a regulated customer-support model",
                 BLUEPRINT_MODEL, BLUEPRINT_RUBRIC, min_words=80),
        DRIFT_SIGNAL,
        FreeText("drift_plan", "Post-deployment drift: why, how to measure, what to do",
                 DRIFT_MODEL, DRIFT_RUBRIC, min_words=50),
    ]
