"""Regenerate the bank of real training logs that the doctor is tested on.

    python tests/log_bank/make_bank.py              # every log whose trainer is available
    python tests/log_bank/make_bank.py --only cartpole_healthy rlhf_hacking_long
    python tests/log_bank/make_bank.py --list       # what each log is

Every log is written by ppo_core's own trainers (bandit, CartPole, RLHF) with fixed seeds:
healthy runs, and runs broken on purpose in one documented way each. `manifest.json` records,
per log, the failure that was planted (`planted`, which the doctor must name), the findings
that the planted failure also causes and that are true of the log (`also`, allowed), the
configuration and the generation time. `tests/test_diagnostics.py` reads the committed logs
and the manifest; it does not run this script.

Logs are small (< 300 KB each). Measured on the shared two-core development machine (other
jobs running, so inflated): the bandit and CartPole logs take about 1.5 minutes together; an
RLHF log (24 iterations of batch 16; 44 for rlhf_hacking_long) took 1 minute with little
contention and 5–15 minutes under heavy contention, plus the one-off build of the tiny GPT-2
and the reward models into the cache. `manifest.json` keeps each log's time.
Exact numbers can differ across torch / gymnasium versions and CPUs; regenerate the whole
bank after upgrading them and re-run the tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))          # run from anywhere in the checkout


@dataclass
class Entry:
    """One log of the bank."""

    trainer: str
    """"bandit", "cartpole" or "rlhf": the ppo_core trainer that writes it"""
    what: str
    """what was done to the run (one sentence, for the README and the manifest)"""
    planted: list
    """the finding(s) the doctor must name (empty: a healthy run, the doctor must say nothing)"""
    run: Callable
    """run(path) -> config dict; trains and writes the JSONL log to path"""
    also: list = field(default_factory=list)
    """findings that are true consequences of the planted failure (allowed, not required)"""
    healthy: bool | None = None
    """a run the doctor must find nothing in; default: nothing planted. A planted bug whose
    symptoms are not one of the doctor's signatures has planted=[] and healthy=False."""

    def __post_init__(self):
        if self.healthy is None:
            self.healthy = not self.planted


# ------------------------------------------------------------------ bandit (ppo_core.trainers.bandits)

def _bandit(kind, means, **cfg):
    def run(path):
        from ppo_core.trainers.bandits import BanditPPOConfig, make_bandit, train_bandit_ppo
        config = BanditPPOConfig(**cfg)
        train_bandit_ppo(make_bandit(kind, means, 1.0), config, log_path=path, overwrite=True)
        return {"bandit": kind, "means": list(means), **asdict(config)}
    return run


TEN_ARMS = tuple(round(i / 9, 4) for i in range(10))      # Gaussian arms 0, 1/9, ..., 1

# ------------------------------------------------------------------ CartPole (ppo_core.trainers.cartpole)

def _cartpole(**cfg):
    def run(path):
        from ppo_core.trainers.cartpole import CartPoleConfig, TrainingDiverged, train
        config = CartPoleConfig(eval_every=8192, eval_episodes=10, log_path=str(path),
                                overwrite=True, **cfg)
        try:
            train(config)
        except TrainingDiverged as e:                       # the log keeps what was written
            print(f"    (trainer stopped: {e})")
        d = asdict(config)
        d.pop("log_path", None)
        d.pop("overwrite", None)
        return d
    return run


# ------------------------------------------------------------------ RLHF (ppo_core.trainers.rlhf)

def _rlhf(fault: str | None = None, **cfg):
    """RLHF on the tiny GPT-2 (`ppo_core.trainers.rlhf.train`), with one of `ppo_core.course.faults.FAULTS`
    planted ("unfrozen_reference", "stale_sampler", ...) or none."""
    def run(path):
        from ppo_core.course.faults import train_with_fault
        from ppo_core.trainers.rlhf import RLHFConfig
        config = RLHFConfig(log_path=str(path), overwrite=True, progress=False, **cfg)
        train_with_fault(fault, config)
        d = asdict(config)
        d.pop("log_path", None)
        d.pop("overwrite", None)
        if fault:
            d["fault"] = fault
        return d
    return run


# ------------------------------------------------------------------ the bank

# small RLHF runs (batch 16, 12 tokens, 24 iterations) so that the bank stays quick to rebuild
_RLHF_COMMON = dict(steps=24, batch_size=16, minibatch_size=8, response_len=12, seed=0)

BANK: dict[str, Entry] = {
    # bandit: 60 updates of bandit PPO
    "bandit_healthy": Entry(
        "bandit", "3-armed Bernoulli bandit (0.2, 0.5, 0.8), SGD lr 0.5, ε = 0.2, β = 0: "
        "converges gradually to the best arm.", [],
        _bandit("bernoulli", (0.2, 0.5, 0.8), updates=60, seed=0)),
    "bandit_huge_lr_no_clip": Entry(
        "bandit", "10-armed Gaussian bandit, SGD lr 20 (40× the default) with the clip off: "
        "the first update jumps to a deterministic policy on a worse arm (0.78 of 1.0).",
        ["kl_blowup"], _bandit("gaussian", TEN_ARMS, updates=60, lr=20.0, clip_eps=None, seed=3),
        also=["entropy_collapse"]),
    "bandit_diverged": Entry(
        "bandit", "10-armed Gaussian bandit, SGD lr 20 with the clip off, another seed: the "
        "logits exceed 1e4 and the trainer stops the run and flags it diverged.",
        ["non_finite"], _bandit("gaussian", TEN_ARMS, updates=60, lr=20.0, clip_eps=None, seed=5),
        also=["kl_blowup"]),
    "bandit_large_beta": Entry(
        "bandit", "3-armed Bernoulli bandit with β = 2 (KL to the uniform start): the penalty "
        "outweighs a reward gap of 0.6 and the policy stays uniform.",
        ["over_regularisation"], _bandit("bernoulli", (0.2, 0.5, 0.8), updates=60, beta=2.0, seed=0)),
    # CartPole-v1: 60k environment steps (117 iterations) unless stated
    "cartpole_healthy": Entry(
        "cartpole", "CartPole-v1 with the default PPO settings (lr 3e-3 annealed, ε = 0.2, "
        "10 epochs): solves it (return 500).", [],
        _cartpole(total_steps=60_000, seed=0)),
    "cartpole_healthy_seed1": Entry(
        "cartpole", "The same healthy settings, seed 1.", [],
        _cartpole(total_steps=60_000, seed=1)),
    "cartpole_huge_lr_no_clip": Entry(
        "cartpole", "lr 0.05 (17× the default), clip off, no gradient clipping, no annealing: "
        "updates of approx_kl ≫ 1, the policy turns deterministic within a few iterations and "
        "the return collapses to ≈ 10.",
        ["kl_blowup", "entropy_collapse"],
        _cartpole(total_steps=60_000, lr=0.05, clip_eps=None, max_grad_norm=0.0, anneal_lr=False),
        also=["destabilising_update"]),
    "cartpole_lr_spike": Entry(
        "cartpole", "lr 0.05 with the clip on (ε = 0.2), no gradient clipping, no annealing, "
        "seed 1: the run learns to a return of about 340, then single updates move the policy "
        "by approx_kl up to 0.8 (the clip only stops the gradient of clipped samples, not the "
        "step of the others) and the return falls back to about 160.",
        ["destabilising_update"],
        _cartpole(total_steps=60_000, lr=0.05, max_grad_norm=0.0, anneal_lr=False, seed=1),
        also=["kl_blowup", "entropy_collapse"]),
    "cartpole_no_value_loss": Entry(
        "cartpole", "vf_coef = 0: the critic is never trained, explained variance stays ≈ 0, "
        "and PPO learns slowly from poor advantages.",
        ["value_failure"], _cartpole(total_steps=60_000, vf_coef=0.0)),
    "cartpole_large_beta": Entry(
        "cartpole", "β = 10 on KL to the initial policy: the policy stays ≈ uniform "
        "(entropy ln 2) and return stays ≈ 30.",
        ["over_regularisation"],
        _cartpole(total_steps=40_000, beta=10.0, kl_reference="initial")),
    "rlhf_healthy": Entry(
        "rlhf", "Tiny GPT-2, unbiased reward model, β = 0.05, ε = 0.2, lr 3e-4: proxy and "
        "gold rise together, KL stays moderate.", [], _rlhf(lr=3e-4, **_RLHF_COMMON)),
    "rlhf_hacking_long": Entry(
        "rlhf", "β = 0 against the reward model trained on annotators who like '!', the "
        "trainer's defaults (lr 3e-4, batch 32), 150 iterations, seed 1 (chapter 06's "
        "beta_0_seed1): the proxy climbs from 0 to about 3.1 and stays there, while the gold "
        "judge's score peaks at about 0.55 (iteration 17) and then falls to about -0.8 as the "
        "samples turn into '!' runs and word loops; the KL to the reference reaches about 134 "
        "nats.",
        ["reward_hacking"],
        _rlhf(reward_bias="exclamation", beta=0.0, lr=3e-4, steps=150, batch_size=32,
              minibatch_size=16, response_len=16, seed=1, n_samples=4),
        also=["kl_blowup", "entropy_collapse", "value_failure"]),
    "rlhf_large_beta": Entry(
        "rlhf", "β = 5 (100× the default; the reward model is normalised to std 1 on the "
        "initial policy's samples), lr 1e-4: the policy stays at the "
        "reference and the reward does not move.", ["over_regularisation"],
        _rlhf(beta=5.0, lr=1e-4, **_RLHF_COMMON), also=["value_failure"]),
    "rlhf_stale_sampler": Entry(
        "rlhf", "Fault: the rollouts are generated by a frozen copy of the initial model (an "
        "inference engine whose weights are never synced), while log π and log π_ref are "
        "scored correctly: on samples from π_ref the k1 estimate has mean "
        "−KL(π_ref‖π) ≤ 0, so the logged KL turns negative as the policy moves.",
        ["negative_kl"], _rlhf(fault="stale_sampler", lr=3e-4, **_RLHF_COMMON),
        also=["value_failure", "over_regularisation"]),
    "rlhf_unfrozen_reference": Entry(
        "rlhf", "Fault: the reference is the policy's own network, so it trains along; "
        "β = 0.05 against the biased reward model, lr 1e-3, 24 iterations. The logged KL is "
        "exactly 0 and the penalty does nothing: the run is a β = 0 run in disguise, and at "
        "this learning rate it hacks the reward model within 24 iterations (gold peaks, then "
        "falls below its start). The doctor's findings are true of the log, and two of them "
        "name the cause: a KL of exactly 0 although β > 0 and the policy moves.",
        [], _rlhf(fault="unfrozen_reference", reward_bias="exclamation", lr=1e-3, **_RLHF_COMMON),
        healthy=False, also=["reward_hacking", "kl_blowup", "over_regularisation",
                             "entropy_collapse", "value_failure"]),
}


def _verdict(e: Entry, found: set) -> str:
    allowed = set() if e.healthy else set(e.planted) | set(e.also)
    return "OK" if set(e.planted) <= found <= allowed else "MISMATCH"


def _relabel(names=None) -> int:
    from ppo_core import diagnostics as dg
    path = HERE / "manifest.json"
    manifest = json.loads(path.read_text())
    bad = 0
    for name in names or list(manifest):
        if name not in BANK or not (HERE / f"{name}.jsonl").exists():
            print(f"{name}: no such log or entry, dropped from the manifest")
            manifest.pop(name, None)
            continue
        e = BANK[name]
        found = {f.name for f in dg.diagnose(HERE / f"{name}.jsonl")}
        entry = manifest.setdefault(name, {"trainer": e.trainer, "config": None, "seconds": None})
        entry.update({"what": e.what, "healthy": e.healthy, "planted": e.planted, "also": e.also})
        verdict = _verdict(e, found)
        bad += verdict != "OK"
        print(f"{name:28s} planted {e.planted}, doctor found {sorted(found)}: {verdict}")
    path.write_text(json.dumps(dict(sorted(manifest.items())), indent=1, default=str) + "\n")
    return 1 if bad else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", help="names of the logs to regenerate")
    p.add_argument("--list", action="store_true", help="list the logs and exit")
    p.add_argument("--relabel", action="store_true",
                   help="do not train: rewrite the manifest's labels (what, planted, also, "
                        "healthy) of the existing logs from this file and re-check them")
    args = p.parse_args(argv)
    if args.list:
        for name, e in BANK.items():
            print(f"{name:28s} {e.trainer:8s} planted={e.planted} {e.what}")
        return 0
    if args.relabel:
        return _relabel(args.only)
    import torch

    torch.set_num_threads(1)           # the tiny models are fastest on one thread
    manifest_path = HERE / "manifest.json"
    names = args.only or list(BANK)
    unknown = set(names) - set(BANK)
    if unknown:
        p.error(f"unknown log(s): {sorted(unknown)}")
    from ppo_core import diagnostics as dg
    t_all = time.perf_counter()
    for name in names:
        e = BANK[name]
        path = HERE / f"{name}.jsonl"
        print(f"{name} ...", flush=True)
        t0 = time.perf_counter()
        config = e.run(path)
        seconds = time.perf_counter() - t0
        found = {f.name for f in dg.diagnose(path)}
        verdict = _verdict(e, found)
        print(f"    {seconds:.1f} s, {path.stat().st_size / 1e3:.0f} KB, planted {e.planted}, "
              f"doctor found {sorted(found)}: {verdict}")
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        manifest[name] = {"trainer": e.trainer, "what": e.what, "healthy": e.healthy,
                          "planted": e.planted, "also": e.also, "config": config, "seconds": round(seconds, 1)}
        manifest_path.write_text(json.dumps(dict(sorted(manifest.items())), indent=1,
                                            default=str) + "\n")           # after every log
    print(f"bank written in {time.perf_counter() - t_all:.0f} s -> {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
