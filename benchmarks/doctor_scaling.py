"""How the doctor's time and memory grow with the size of the log (issue 13).

Writes RLHF-like JSONL logs of about 10, 50 and 100 MB (every key `ppo_core.trainers.rlhf`
logs, three sample responses per record, ≈ 1.5 kB a record; a healthy run whose return rises
and plateaus, with one destabilising spike so that the detectors do some work), then runs
`python -m ppo_core doctor LOG --json` on each in a fresh process, pinned to one core where
`taskset` exists, and prints wall time, seconds per MB and peak memory (max RSS).

    python benchmarks/doctor_scaling.py                 # 10, 50, 100 MB
    python benchmarks/doctor_scaling.py --sizes 10 20   # other sizes (MB)
    python benchmarks/doctor_scaling.py --keep DIR      # keep the generated logs in DIR

The requirement: 100 MB in under a minute on one core, memory that does not grow with the
file's text (only with the number of iterations: a few numbers each).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("the battery lasts all day and the screen is bright it leaks everywhere "
         "pretty much what I expected fit is made in Portugal sturdy cheap broke after "
         "a week would buy again customer service never answered").split()


def record(i: int, n: int, g: random.Random) -> dict:
    """One RLHF-like record at iteration i of n (the keys `rlhf._iteration` writes)."""
    x = i / max(n, 1)
    spike = abs(i - n // 2) < 1
    prox = 1.5 * (1 - math.exp(-6 * x)) + g.gauss(0, 0.05) - (1.0 if i > n // 2 and i < n // 2 + 20 else 0.0)
    gold = 0.8 * (1 - math.exp(-6 * x)) + g.gauss(0, 0.05)
    samples = [{"prompt": " ".join(g.choice(WORDS) for _ in range(8)),
                "response": " " + " ".join(g.choice(WORDS) for _ in range(g.randint(3, 12))) + ".",
                "proxy": g.gauss(1, 1), "gold": g.random()} for _ in range(3)]
    return {
        "iteration": i + 1, "episodes": 16 * (i + 1),
        "objective/kl": 2 * (1 - math.exp(-8 * x)) + g.gauss(0, 0.05),
        "objective/kl_per_token": 0.2 * (1 - math.exp(-8 * x)) + g.gauss(0, 0.005),
        "objective/beta": 0.05, "objective/proxy_reward": prox, "objective/gold_reward": gold,
        "objective/rlhf_reward": prox - 0.1, "losses/policy_loss": g.gauss(-0.03, 0.01),
        "losses/value_loss": 3 * math.exp(-5 * x) + 0.1 + abs(g.gauss(0, 0.05)),
        "losses/entropy": 0.8 + 0.5 * math.exp(-3 * x) + g.gauss(0, 0.005),
        "losses/approx_kl": (0.5 if spike else 0.01 * math.exp(g.gauss(0, 0.4))),
        "losses/approx_kl_k3": 0.01 * math.exp(g.gauss(0, 0.4)),
        "losses/clipfrac": 0.6 if spike else 0.1 + g.gauss(0, 0.02),
        "losses/value_clipfrac": 0.3 + g.gauss(0, 0.02), "losses/kl_ref": g.gauss(0.2, 0.02),
        "losses/ratio_max": 2 + g.random(), "losses/grad_norm": 1.5 + g.random(),
        "losses/explained_variance": min(0.9, 0.1 + 5 * x) + g.gauss(0, 0.03),
        "charts/response_length": 6 + g.random(), "charts/gradient_steps": 4,
        "perf/generate_s": 3.8, "perf/score_s": 3.8, "perf/update_s": 5.5,
        "perf/iteration_s": 13.1, "perf/episodes_per_second": 1.2,
        "perf/tokens_per_second": 7.8, "samples": samples}


def write_log(path: Path, megabytes: float, seed: int = 0) -> int:
    """Write records until the file holds `megabytes` MB; returns the number of records."""
    g = random.Random(seed)
    target = int(megabytes * 1e6)
    per = len(json.dumps(record(0, 1, g))) + 1
    n = max(1, target // per)
    size = 0
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            line = json.dumps(record(i, n, g)) + "\n"
            fh.write(line)
            size += len(line)
    return n


def run_doctor(path: Path) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB, exit status) of the doctor on `path`, one core."""
    cmd = [sys.executable, "-m", "ppo_core", "doctor", str(path), "--json"]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", str(min(os.sched_getaffinity(0)))] + cmd
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    _, status, usage = os.wait4(proc.pid, 0)             # this child's own peak memory
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, proc.returncode


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=float, nargs="+", default=[10, 50, 100], help="MB")
    p.add_argument("--keep", default=None, help="write the logs here and keep them")
    args = p.parse_args(argv)
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="doctor-scaling-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"{'MB':>6} {'records':>8} {'seconds':>8} {'s/MB':>6} {'max RSS MB':>10} {'exit':>4}")
    try:
        for mb in args.sizes:
            path = folder / f"rlhf_{mb:g}MB.jsonl"
            if not path.exists():
                n = write_log(path, mb)
            else:
                n = sum(1 for _ in open(path, encoding="utf-8"))
            real_mb = path.stat().st_size / 1e6
            wall, rss, rc = run_doctor(path)
            print(f"{real_mb:6.1f} {n:8d} {wall:8.2f} {wall / real_mb:6.3f} {rss:10.0f} {rc:4d}",
                  flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
