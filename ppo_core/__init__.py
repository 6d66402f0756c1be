"""ppo_core: the small library behind the PPO course, from bandits to GPT-2 RLHF.

One concept per module (see DESIGN.md):

    losses       clipped surrogate, KL estimators, value loss, entropy, composite objective (ch. 02)
    advantages   discounted returns, GAE, whitening (ch. 03)
    kl_control   fixed and adaptive β (ch. 02)
    masking      masked mean/var/whiten, token log-probs (ch. 04)
    bandits      k-armed bandits and bandit PPO (ch. 01)
    cartpole     the CartPole PPO trainer and its CLI (ch. 03)
    rollout      actor-critic network, vectorised rollouts, greedy evaluation (ch. 03)
    checkpoint   safetensors weights + JSON config, no pickle (ch. 03)
    metrics      the JSONL metrics log every trainer writes
    text, reward, value_head, rlhf   language models as policies (ch. 04–05)
    diagnostics  reads a metrics log and names the failure (ch. 06)
    widgets, plots   the interactive labs and shared figures

This file imports nothing heavy, so that `python3 -m ppo_core.course` can set up the
environment with a bare Python before torch is installed.
"""

__version__ = "0.1.0"

import os as _os
from pathlib import Path as _Path


def cache_dir() -> _Path:
    """Where built artefacts (tokenizer, tiny GPT-2, reward model) live: `$PPO_COURSE_CACHE`,
    else `.cache/ppo_course` in the repository. Created on first use."""
    default = _Path(__file__).resolve().parent.parent / ".cache" / "ppo_course"
    path = _Path(_os.environ.get("PPO_COURSE_CACHE", default))
    path.mkdir(parents=True, exist_ok=True)
    return path
