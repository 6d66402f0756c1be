"""ppo_core: the small library behind the PPO course, from bandits to GPT-2 RLHF.

One concept per module; the tree shows the architecture (README, "The library"):

    losses       the PPO core: clipped surrogate, KL estimators, KL penalty, value loss,
                 entropy, the composite objective (ch. 02)
    advantages   discounted returns, GAE, whitening (ch. 03)
    kl_control   fixed and adaptive β (ch. 02)
    masking      masked mean/var/whiten, token log-probs (ch. 04)
    value_head   a value head over any causal LM (ch. 04)
    metrics      the JSONL metrics log every trainer writes and the doctor reads
    trainers/    the bandit, CartPole and RLHF trainers, their config style and run manager
    lm/          the review corpus, the tiny GPT-2, the model cache, gold judge and reward models
    diagnostics/ the doctor: reads a metrics log and names the failure (ch. 06)
    course/      the launcher, the labs, the shared figures, the exercise checker and keys

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
