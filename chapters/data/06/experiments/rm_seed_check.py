"""Does the β = 0 reward hacking depend on the particular reward model? Train the biased
reward model with another seed (its own pools, pairs and labels), then run the default
β = 0 trainer on it.

    HF_HUB_OFFLINE=1 python chapters/data/06/experiments/rm_seed_check.py --rm-seed 1 --seeds 0 1 2

Writes chapters/data/06/experiments/runs/rm_seed<k>/rm/ (the reward model) and beta0_seed<S>.jsonl; prints
the summary of `summarise.py`. Each run is a separate process (one torch thread each),
at most two at a time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def train_rm(out: Path, rm_seed: int) -> None:
    from ppo_core.lm import reward
    spec = dataclasses.replace(reward.reward_spec("exclamation"), seed=rm_seed)
    rm = reward.train_reward_model(spec, progress=False)
    rm.save(out)
    print(json.dumps({k: v for k, v in rm.metrics.items() if k != "spec"}, indent=1))


def run(rm_dir: Path, seed: int, log: Path) -> None:
    from ppo_core.lm import reward
    from ppo_core.trainers import rlhf
    rm = reward.RewardModel.load(rm_dir, device="cpu")
    cfg = rlhf.RLHFConfig(reward_bias="exclamation", beta=0.0, steps=150, seed=seed,
                          log_path=str(log), progress=False)
    rlhf.train(cfg, reward_fn=rm.score, gold_fn=reward.gold_score)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rm-seed", type=int, default=1)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--_run", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    import torch
    torch.set_num_threads(1)
    out = HERE / "runs" / f"rm_seed{a.rm_seed}"
    if a._run is not None:
        run(out / "rm", a._run, out / f"beta0_seed{a._run}.jsonl")
        return
    if not (out / "rm" / "reward_meta.json").exists():
        out.mkdir(parents=True, exist_ok=True)
        train_rm(out / "rm", a.rm_seed)
    seeds = list(a.seeds)
    while seeds:
        batch, seeds = seeds[:2], seeds[2:]
        procs = [subprocess.Popen([sys.executable, __file__, "--rm-seed", str(a.rm_seed),
                                   "--_run", str(s)]) for s in batch]
        for q in procs:
            q.wait()
    subprocess.run([sys.executable, str(HERE / "summarise.py")]
                   + [str(out / f"beta0_seed{s}.jsonl") for s in a.seeds])


if __name__ == "__main__":
    main()
