"""Issue 15's optional check: is a reward model trained on less data over-optimised sooner?

    python chapters/data/06/experiments/rm_size.py small SEED   # the small unbiased reward model
    python chapters/data/06/experiments/rm_size.py big SEED     # the course's unbiased reward model

β = 0, 150 iterations, the trainer's defaults, one thread; logs go to
chapters/data/06/experiments/runs/rm_size/{small,big}_seed{SEED}.jsonl (ignored by git). The small
reward model is the course's unbiased spec with 375 training texts instead of 3,000 and 256
annotator comparisons per step instead of 2,048 (20,480 in all instead of 163,840); it is built
once into runs/rm_size/rm_small. Summarise with `summarise.py` and the Gao fit of make_sweeps.py.
"""

import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent.parent.parent))

from ppo_core.lm import reward  # noqa: E402
from ppo_core.trainers import rlhf  # noqa: E402


def small_reward_model(out: Path) -> reward.RewardModel:
    if not (out / "metrics.json").exists():
        spec = replace(reward.reward_spec(None), n_train_texts=375, pairs_per_batch=256)
        rm = reward.train_reward_model(spec, progress=False)
        rm.save(out)
        (out / "metrics.json").write_text(json.dumps(
            {k: v for k, v in rm.metrics.items() if k != "spec"}, default=str, indent=1))
    return reward.RewardModel.load(out, device="cpu")


def main() -> None:
    which, seed = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(1)
    runs = HERE / "runs" / "rm_size"
    runs.mkdir(parents=True, exist_ok=True)
    rm = small_reward_model(runs / "rm_small") if which == "small" else reward.load_reward_model(None, "cpu")
    cfg = rlhf.RLHFConfig(beta=0.0, steps=150, seed=seed, n_samples=4, progress=False, threads=1,
                          log_path=str(runs / f"{which}_seed{seed}.jsonl"), overwrite=True)
    rlhf.train(cfg, reward_fn=rm.score)


if __name__ == "__main__":
    main()
