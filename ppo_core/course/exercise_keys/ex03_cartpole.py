"""Answer key of exercises/03_cartpole.ipynb (chapter 03: PPO on CartPole)."""

from __future__ import annotations

import torch

from ...advantages import gae
from ..checker import FunctionCheck, MultipleChoice, Numeric
from ...losses import value_loss


def _ref_gae(rewards, values, terminated, truncated, last_value, final_values, gamma, lam):
    return gae(rewards, values, terminated, last_value, gamma, lam,
               truncated=truncated, final_values=final_values)


def _gae_inputs(g):
    """Random rollouts whose first columns are the edge cases: a termination and a
    truncation on the last step, both flags on one step (the pole fell on the step the clock
    ran out: termination wins), no episode end at all. final_values holds random values
    everywhere; only the truncated steps may read it."""
    T = int(torch.randint(1, 13, (1,), generator=g))
    N = 5
    term = (torch.rand(T, N, generator=g) < 0.15).float()
    trunc = (torch.rand(T, N, generator=g) < 0.1).float() * (1 - term)
    term[:, :4], trunc[:, :4] = 0.0, 0.0
    term[-1, 0] = 1.0                                        # terminated on the last step
    trunc[-1, 1] = 1.0                                       # truncated on the last step
    term[T // 2, 2] = trunc[T // 2, 2] = 1.0                 # both at once
    # column 3: no episode end anywhere; column 4: random ends
    lam = [0.0, 1.0, float(torch.rand((), generator=g))][int(torch.randint(3, (1,), generator=g))]
    gamma = float(torch.empty(1).uniform_(0.9, 1.0, generator=g))
    return (torch.rand(T, N, generator=g), torch.randn(T, N, generator=g), term, trunc,
            torch.randn(N, generator=g), torch.randn(T, N, generator=g), gamma, lam)


def _ref_value_loss(values, returns):
    return value_loss(values, values.detach(), returns)[0]


def _vl_inputs(g):
    return (torch.randn(16, generator=g, requires_grad=True), torch.randn(16, generator=g))


GAE = FunctionCheck(
    "gae", "GAE from raw rollout arrays, with terminations and truncations", _ref_gae,
    _gae_inputs,
    explanation="V_next(t) is values[t+1] inside an episode, last_value after the last step, "
                "final_values[t] where the episode was truncated and 0 where it terminated "
                "(termination wins when both flags are set: the task ended, whatever the "
                "clock says). The recursion Â_t = δ_t + γλ(1 − end_t)Â_{t+1} stops at both kinds "
                "of end; only the bootstrap differs. This is ppo_core.advantages.gae.",
    hint="Build V_next first, as a (T, N) tensor, then loop backwards over t. A truncated step "
         "bootstraps from final_values[t]; a terminated one from nothing; neither lets "
         "Â_{t+1} flow into Â_t. Check T = 1 and λ = 0 by hand.")

VALUE_LOSS = FunctionCheck(
    "value_loss", "the value loss", _ref_value_loss, _vl_inputs, grad_wrt=(0,),
    explanation="L^V = ½·mean((V − R)²): the returns are constants (targets), so the gradient "
                "flows only into V, and equals (V − R)/B.",
    hint="Mind the ½ and the mean; the targets must not receive a gradient.")

LAMBDA_ONE = Numeric(
    "lambda_one", "Â_0 for λ = 1", value=1 + 0.5 * 1 + 0.25 * 1 - 2.0, atol=1e-6,
    explanation="With λ = 1 the δ's telescope: Â_0 = r_0 + γ r_1 + γ² r_2 − V(s_0) "
                "(the episode terminated at t = 2, so nothing is bootstrapped) = 1.75 − 2 = −0.25.",
    hint="With λ = 1, Â_t is the discounted return until the episode ends, minus V(s_t).")

AUTORESET = MultipleChoice(
    "autoreset", "What should the trainer do with the autoreset step?",
    options={"a": "Keep it: its reward of 0 teaches the critic that episodes end.",
             "b": "Keep it but mark it terminated, so nothing is bootstrapped.",
             "c": "Drop it from the loss: it is not a transition of any episode.",
             "d": "Replace its observation with the reset observation and keep it."},
    correct="c",
    explanation="Its s_t is the previous episode's final state and its s_{t+1} a fresh start; the "
                "action was ignored. Any loss on it teaches the policy and the critic a transition "
                "that never happened. ppo_core marks it valid=False.",
    feedback={"a": "Termination is already in the terminated flag of the previous step.",
              "b": "Then the policy loss still pushes on an action the env ignored.",
              "d": "Then the action and the log-probability belong to no real transition."})

TRUNCATION = MultipleChoice(
    "truncation", "For the last step of a truncated episode, what is V_next?",
    options={"a": "V(final observation), the state the time limit cut.",
             "b": "0, like a termination.",
             "c": "V(first observation of the next episode)."},
    correct="a",
    explanation="The pole was still up at step 500; the future was cut by the clock, not by the "
                "task. Treating it as a termination teaches the critic that step 500 is a cliff "
                "it cannot see in the observation.",
    feedback={"b": "That tells the critic a perfectly healthy state is worth nothing.",
              "c": "That state belongs to a different episode: a leak across the boundary."})

DIAGNOSE = MultipleChoice(
    "diagnose", "What went wrong in the collapsed run, and what is the fix?",
    options={"a": "The critic is too small: explained variance stays low, so the advantages "
                  "are noise.",
             "b": "There is not enough exploration: the entropy collapsed, so raise the entropy "
                  "bonus coefficient.",
             "c": "The environment is too hard for PPO.",
             "d": "Each update moves π too far: restore the clip, or use fewer epochs or a "
                  "smaller lr."},
    correct="d",
    explanation="A KL of several nats per update means the new policy has little to do with the "
                "one that collected the data; the importance-weighted surrogate is meaningless "
                "there. The clip (or a KL penalty, or fewer epochs / a smaller step) is the fix.",
    feedback={"a": "Read the explained-variance column: after the collapse it is close to 1. "
                   "The critic predicts the short episodes well; it is not what broke.",
              "b": "Entropy falls *because* the policy jumped to a deterministic one.",
              "c": "The same settings with ε = 0.2 learn."})


def questions() -> list:
    """The notebook's questions, in notebook order."""
    return [GAE, VALUE_LOSS, LAMBDA_ONE, AUTORESET, TRUNCATION, DIAGNOSE]
