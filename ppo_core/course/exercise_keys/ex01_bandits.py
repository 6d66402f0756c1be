"""Answer key of exercises/01_bandits.ipynb (chapter 01: bandits and policy gradients)."""

from __future__ import annotations

import torch

from ...trainers import bandits
from ..checker import FunctionCheck, MultipleChoice, Numeric


def _gradient_inputs(g):
    A, K, B = 5, 3, 8
    theta = torch.randn(A, generator=g)
    actions = torch.randint(0, A, (K, B), generator=g)
    rewards = torch.rand(K, B, generator=g).round()
    return (theta, actions, rewards), {}


EX1_GRADIENT = FunctionCheck(
    "ex1_gradient", "REINFORCE gradient with a batch-mean baseline",
    reference=lambda th, a, r: bandits.score_function_gradients(th, a, r, "mean"),
    make_inputs=_gradient_inputs,
    explanation="Each sample contributes (R_i − mean R)(e_{a_i} − π_θ): the score of a softmax "
                "is the one-hot of the chosen arm minus the whole probability vector.")

EX2_EXACT = Numeric(
    "ex2_exact", "∂J/∂θ_1 (θ_1 the logit of arm 1, which pays 1) for θ = (0, 0), μ = (0, 1)",
    value=0.25, atol=1e-3, rtol=0.0,
    explanation="∇J = π ⊙ (μ − π·μ). With π = (½, ½) and π·μ = ½, the second component is "
                "½ · (1 − ½) = 0.25: raising θ_1 moves probability to the arm that pays more.",
    hint="arms are numbered from 0, so θ_1 is the logit of arm 1 (μ_1 = 1); use the exact "
         "gradient π ⊙ (μ − π·μ) from the chapter.")

_SAME_MEAN = "Compare the two mean gradients you printed: they agree within noise."

EX3_BASELINE = MultipleChoice(
    "ex3_baseline", "What did subtracting the baseline change in your measurement?",
    {"a": "both the expected gradient and its variance",
     "b": "the expected gradient: it now points more directly at the best arm",
     "c": "the variance of the estimate, not (in expectation) its direction",
     "d": "neither: with or without it, the two estimators are the same"},
    "c",
    explanation="E[b ∇log π(a)] = b ∇Σπ(a) = 0, so any baseline independent of the sampled arm "
                "leaves the expected gradient unchanged (your two means agree within noise), "
                "while the variance you measured dropped by roughly half.",
    feedback={"a": _SAME_MEAN, "b": _SAME_MEAN, "d": "Look at the two variances you printed."})

EX4_STUCK = MultipleChoice(
    "ex4_stuck", "Why does the lr = 100 run never leave the wrong arm?",
    {"a": "the batch-mean baseline biases each gradient towards the arm the policy already "
          "prefers",
     "b": "the learning rate is so large that the logits overflow and become NaN",
     "c": "the wrong arm's payout grows the more often the policy pulls it",
     "d": "π_θ is one-hot on that arm: every pull is that arm, and e_a − π_θ ≈ 0"},
    "d",
    explanation="The score e_a − π vanishes for the arm that holds all the mass, and the other "
                "arms are never sampled, so no batch carries information about them. The run is "
                "not numerically broken (no NaN); it converged to the wrong arm after one step.",
    feedback={"a": "The baseline is unbiased: E[b ∇log π] = 0 for any b that does not depend on "
                   "the sampled arm.",
              "b": "Print the probabilities: they are finite; one is ≈ 1.",
              "c": "The bandit's arms pay fixed means, whatever the policy does."})


def questions() -> list:
    """The notebook's questions, in notebook order."""
    return [EX1_GRADIENT, EX2_EXACT, EX3_BASELINE, EX4_STUCK]
