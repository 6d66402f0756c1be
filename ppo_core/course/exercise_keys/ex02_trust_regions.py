"""Answer key of exercises/02_trust_regions.ipynb (chapter 02: trust regions)."""

from __future__ import annotations

import torch

from ... import losses
from ..checker import FunctionCheck, MultipleChoice, Numeric


def _token_surrogate(logp, old_logp, adv, mask, eps):
    """(objective, clip fraction) over the masked tokens: ppo_core's loss, negated."""
    loss, stats = losses.clipped_surrogate(logp, old_logp, adv, eps, mask=mask)
    return -loss, torch.tensor(stats["clipfrac"])


def _token_inputs(g):
    """A (B, T) batch of right-padded responses. The padding holds large, finite garbage:
    it must change neither the value nor the gradient."""
    B = int(torch.randint(1, 5, (1,), generator=g))
    T = int(torch.randint(1, 9, (1,), generator=g))
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = 1 if B > 1 else lengths[0]                  # a one-token response
    mask = torch.arange(T)[None, :] < lengths[:, None]       # (B, T) bool
    logp = torch.randn(B, T, generator=g) * 0.4
    old = torch.randn(B, T, generator=g) * 0.4
    adv = torch.randn(B, T, generator=g)
    garbage = torch.randn(3, B, T, generator=g) * 5
    logp = torch.where(mask, logp, garbage[0])
    old = torch.where(mask, old, garbage[1])
    adv = torch.where(mask, adv, garbage[2])
    eps = float(torch.empty(1).uniform_(0.05, 0.4, generator=g))
    return (logp, old, adv, mask, eps), {}


EX1_CLIP = FunctionCheck(
    "ex1_clip", "the clipped surrogate over the tokens of a padded batch, and its clip fraction",
    reference=_token_surrogate, make_inputs=_token_inputs, grad_wrt=(0,),
    explanation="The mean runs over the real tokens only, Σ m_t·L_t / Σ m_t, so a batch with "
                "more padding does not weigh less. The clip is active where clip(r, 1−ε, 1+ε)·Â "
                "< r·Â: for Â > 0 that is r > 1 + ε, for Â < 0 it is r < 1 − ε. There the "
                "token's gradient is exactly zero, which is why the clip fraction is worth "
                "logging: it is the share of tokens that no longer push the policy.",
    hint="the objective (to maximise), not the loss; average with the mask, Σ m·L / Σ m; the "
         "clip is active only where the clipped branch is strictly the smaller one.")

EX2_VALUE = Numeric(
    "ex2_value", "per-sample objective at r = 1.5, Â = 2, ε = 0.2", value=2.4, atol=1e-6, rtol=0,
    explanation="min(1.5·2, clip(1.5, 0.8, 1.2)·2) = min(3.0, 2.4) = 2.4: the clipped branch "
                "is the smaller one, so this sample gives no gradient.",
    hint="compute both branches, r·Â and clip(r, 1−ε, 1+ε)·Â, and take the smaller.")

EX3_SINGLE_UPDATE = MultipleChoice(
    "ex3_single_update",
    "A run is unstable: after a few good updates, a single large update wrecks the policy. "
    "Which mechanism is specifically designed to limit how far the new policy can move from "
    "the old one in each update?",
    {"a": "clipping the probability ratio r(θ) to [1 − ε, 1 + ε]",
     "b": "the KL penalty to the reference policy, with a large β",
     "c": "subtracting a baseline from the reward",
     "d": "the adaptive β controller, which raises β when the KL grows"},
    "a",
    explanation="In your plot the clipped runs keep every per-update KL at a few hundredths of "
                "a nat, while the penalty-only run moves about a nat per update. The clip acts "
                "per sample, on the ratio to the *previous* policy, within each update.",
    feedback={"b": "Look at the per-update KL of the 'KL only' run: the penalty is measured "
                   "against the reference, and one gradient step can still overshoot.",
              "c": "A baseline lowers the gradient's variance; it bounds nothing.",
              "d": "The controller changes β between updates, on the time scale of its "
                   "horizon; it cannot stop one step."})

EX4_LARGE_BETA = MultipleChoice(
    "ex4_large_beta",
    "You set β very high. What is the most likely outcome, according to your sweep?",
    {"a": "training diverges, because the penalty's gradient is huge",
     "b": "the policy finds the best arm faster, as its updates are more stable",
     "c": "the policy stays close to the reference and the reward barely improves",
     "d": "nothing changes: the clip already limits each update"},
    "c",
    explanation="The optimum of E[R] − β KL is π* ∝ π_ref·exp(μ/β), which tends to π_ref as "
                "β grows: in your sweep the KL to the reference fell towards 0 and the reward "
                "towards the reference's 0.49. That is over-regularisation.",
    feedback={"a": "Not with a sensible step size: in your sweep β = 3 trained smoothly. "
                   "(β × learning rate very large can overshoot, but that is a step-size "
                   "problem.)",
              "b": "Check the reward at β = 3 against β = 0 in your sweep.",
              "d": "The KL to the reference in your sweep changed by orders of magnitude."})

EX5_WHY_BOTH = MultipleChoice(
    "ex5_why_both",
    "Why does PPO's objective use both a clip on the ratio and a KL penalty to a reference?",
    {"a": "they are redundant: either one alone gives the same result, and both are kept as "
          "a safety margin against bugs",
     "b": "the penalty keeps each single update small, while the clip keeps the policy near "
          "the reference over the whole run",
     "c": "the clip is there for the value function and the penalty for the policy, so each "
          "loss has its own constraint",
     "d": "the clip bounds each update but not the drift across updates; the penalty bounds "
          "the drift but not one step"},
    "d",
    explanation="Your four-way plot shows both halves: 'clip only' has tiny per-update KL but "
                "its KL to the reference keeps growing to the unconstrained level; 'KL only' "
                "holds the drift down but each update moves about as far as an unconstrained "
                "one. Only 'both' has small steps and bounded drift.",
    feedback={"a": "Compare 'clip only' and 'KL only' in your plot: they fail differently.",
              "b": "That is the roles swapped: check which run has small per-update KL.",
              "c": "Both act on the policy here: the bandit has no value function."})


def questions() -> list:
    """The notebook's questions, in notebook order."""
    return [EX1_CLIP, EX2_VALUE, EX3_SINGLE_UPDATE, EX4_LARGE_BETA, EX5_WHY_BOTH]
