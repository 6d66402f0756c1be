"""Regenerate the sweep logs that chapter 06 reads (fixed seeds).

    python chapters/data/06/make_sweeps.py              # everything (~17 min on one CPU core)
    python chapters/data/06/make_sweeps.py --only beta  # one group: beta, eps_rlhf, adaptive,
                                                        #   faults, eps_cartpole; or run names
    python chapters/data/06/make_sweeps.py --jobs 2     # two runs at a time
    python chapters/data/06/make_sweeps.py --list       # the runs, from the code

Every run is one of `ppo_core`'s own trainers (`ppo_core.trainers.rlhf.train`,
`ppo_core.trainers.cartpole.train`) writing its standard JSONL log into this folder; `manifest.json`
records each run's configuration, wall time, and the torch version. The RLHF runs use the
course's tiny GPT-2 and reward models, the ones the chapter loads, each on one torch thread.
The CartPole runs (`eps_cartpole`) were last made before the RLHF world changed and are
independent of it.

Chapter 06's planted bugs live in `ppo_core.course.faults`; `FAULTS` below names the ones whose
runs are stored here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from ppo_core.trainers import rlhf  # noqa: E402
from ppo_core.course.faults import train_with_fault  # noqa: E402

# ----------------------------------------------------------------------------------------
# The runs
# ----------------------------------------------------------------------------------------

#: shared settings of the RLHF runs: the trainer's defaults (32 prompts per iteration, 16-token
#: responses, lr 3e-4, 2 epochs, ε = 0.2) against the biased reward model (annotators who like "!")
RLHF_BASE = dict(reward_bias="exclamation", n_samples=4, seed=0, progress=False)
BETAS = [0.0, 0.03, 0.1, 0.3, 1.0]
SEEDS = [0, 1, 2]
BETA_STEPS = 150                          # long enough for β = 0 to over-optimise on every seed
EPS_RLHF = [0.05, 0.2, 10.0]             # 10 (the trainer's maximum) = the clip never binds
EPS_RLHF_BASE = dict(RLHF_BASE, reward_bias=None, beta=0.05, lr=1e-3, update_epochs=4, steps=30)
ADAPTIVE = dict(RLHF_BASE, reward_bias=None, beta=0.3, kl_target=3.0, kl_horizon=160.0,
                steps=50)
FAULT_BETA = 0.1
FAULTS = ["eos_masked", "shifted", "unfrozen_reference"]
EPS_CARTPOLE = [0.05, 0.2, 0.5, None]    # None = clip off
CARTPOLE_SEEDS = [0, 1]
CARTPOLE_BASE = dict(total_steps=60_000, eval_every=0, threads=1)
CARTPOLE_KEYS = ["iteration", "global_step", "charts/episodic_return", "losses/approx_kl",
                 "losses/clipfrac", "losses/entropy", "losses/explained_variance",
                 "losses/value_loss", "losses/policy_loss", "objective/kl", "objective/beta",
                 "perf/train_seconds"]


def _tag(x) -> str:
    return "none" if x is None else f"{x:g}"


def runs() -> dict[str, dict]:
    """name -> {"group", "trainer", "config", "fault"}: every run this script makes."""
    out = {}
    for b in BETAS:
        for seed in SEEDS:
            out[f"beta_{_tag(b)}_seed{seed}"] = dict(
                group="beta", trainer="rlhf",
                config=dict(RLHF_BASE, beta=b, seed=seed, steps=BETA_STEPS), fault=None)
    for e in EPS_RLHF:
        out[f"eps_rlhf_{_tag(e)}"] = dict(group="eps_rlhf", trainer="rlhf",
                                          config=dict(EPS_RLHF_BASE, clip_eps=e), fault=None)
    out["adaptive_kl"] = dict(group="adaptive", trainer="rlhf", config=dict(ADAPTIVE), fault=None)
    for f in FAULTS:
        out[f"fault_{f}"] = dict(group="faults", trainer="rlhf",
                                 config=dict(RLHF_BASE, beta=FAULT_BETA, steps=30), fault=f)
    for e in EPS_CARTPOLE:
        for s in CARTPOLE_SEEDS:
            out[f"eps_cartpole_{_tag(e)}_seed{s}"] = dict(
                group="eps_cartpole", trainer="cartpole",
                config=dict(CARTPOLE_BASE, clip_eps=e, seed=s), fault=None)
    return out


# ----------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------

def _write(path: Path, records: list[dict], keys: list[str]) -> None:
    """The CartPole runs' records, cut down to `keys` (their full logs are large)."""
    from ppo_core.metrics import MetricsLog

    with MetricsLog(path, overwrite=True) as log:
        for r in records:
            log.write({k: r[k] for k in keys if k in r})


def run_one(name: str, spec: dict | None = None, out_dir: Path = HERE, progress: bool = False) -> float:
    """Train run `name` (of `runs()`) and write `out_dir/name.jsonl`; return the wall time.
    `progress` shows the trainer's tqdm bar (the logs do not depend on it)."""
    spec = spec if spec is not None else runs()[name]
    t0 = time.perf_counter()
    if spec["trainer"] == "rlhf":
        train_with_fault(spec["fault"], rlhf.RLHFConfig(**dict(
            spec["config"], progress=progress, overwrite=True,
            log_path=str(Path(out_dir) / f"{name}.jsonl"))))
    else:
        from ppo_core.trainers import cartpole

        res = cartpole.train(cartpole.CartPoleConfig(**dict(spec["config"], progress=progress)))
        _write(Path(out_dir) / f"{name}.jsonl", res.records, CARTPOLE_KEYS)
    return time.perf_counter() - t0


def load_run(name: str, rerun: bool = False, out_dir: Path | None = None) -> list[dict]:
    """The records of run `name`: read from this folder, or (`rerun=True`, chapter 06's full
    mode) trained afresh into `out_dir` (default `ppo_core.cache_dir()/ch06_sweeps`) unless a
    log from an earlier full-mode run is already there."""
    from ppo_core.metrics import read_log

    if name not in runs():
        raise ValueError(f"name must be one of {sorted(runs())}, got {name!r}")
    if not rerun:
        return read_log(HERE / f"{name}.jsonl")
    if out_dir is None:
        import ppo_core

        out_dir = ppo_core.cache_dir() / "ch06_sweeps"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not (out_dir / f"{name}.jsonl").exists():
        run_one(name, out_dir=out_dir, progress=True)
    return read_log(out_dir / f"{name}.jsonl")


# ----------------------------------------------------------------------------------------
# Analysis: the Gao et al. (2022) fit
# ----------------------------------------------------------------------------------------

def gao_fit(d, gain):
    """Least-squares fit of Gao et al. (2022)'s RL form to a gold-reward curve:

        R(d) = d (α − β_g · log d),      d = √KL(π‖π_ref)

    `gain` is the gold reward minus its value at d = 0, so R(0) = 0 as in the paper. The form
    is linear in (α, β_g): R = α·d − β_g·(d log d), solved by `numpy.linalg.lstsq`.

    Args: d, gain: `(n,)` arrays, d > 0 (points with d ≤ 0 are dropped).
    Returns: (α, β_g, d*) with d* = exp(α/β_g − 1) the d of the curve's maximum
    (dR/dd = α − β_g(log d + 1) = 0); d* = inf when β_g ≤ 0 (no turn-over within the form).
    """
    import numpy as np

    d, gain = np.asarray(d, dtype=float), np.asarray(gain, dtype=float)
    if d.shape != gain.shape or d.ndim != 1:
        raise ValueError(f"d and gain must be 1-D arrays of one shape, got {d.shape}, {gain.shape}")
    ok = (d > 0) & np.isfinite(d) & np.isfinite(gain)
    if ok.sum() < 3:
        raise ValueError(f"gao_fit needs at least 3 points with d > 0, got {int(ok.sum())}")
    d, gain = d[ok], gain[ok]
    X = np.stack([d, -d * np.log(d)], axis=1)                             # (n, 2)
    (alpha, beta_g), *_ = np.linalg.lstsq(X, gain, rcond=None)
    d_star = float(np.exp(alpha / beta_g - 1)) if beta_g > 0 else float("inf")
    return float(alpha), float(beta_g), d_star


def _run_in_worker(name: str) -> tuple[str, float]:
    torch.set_num_threads(1)          # the tiny models are fastest on one thread
    return name, run_one(name)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", default=None, help="groups or run names to make")
    p.add_argument("--list", action="store_true", help="list the runs and exit")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (each on one thread)")
    args = p.parse_args(argv)
    table = runs()
    if args.list:
        for name, spec in table.items():
            print(f"{name:28s} {spec['trainer']:8s} fault={spec['fault']}")
        return 0
    if args.jobs < 1:
        p.error(f"--jobs must be ≥ 1, got {args.jobs}")
    chosen = [n for n, s in table.items()
              if args.only is None or n in args.only or s["group"] in args.only]
    if not chosen:
        raise SystemExit(f"--only {args.only} matches no run; see --list")
    manifest_path = HERE / "manifest.json"

    def record(name: str, seconds: float) -> None:
        # re-read before writing: two invocations of this script may run in parallel
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        manifest[name] = dict(table[name], seconds=round(seconds, 1), torch=torch.__version__)
        manifest_path.write_text(json.dumps(dict(sorted(manifest.items())), indent=1))
        print(f"{name:28s} {seconds:6.1f} s", flush=True)

    if args.jobs == 1:
        for name in chosen:
            record(*_run_in_worker(name))
        return 0
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for fut in as_completed([pool.submit(_run_in_worker, n) for n in chosen]):
            record(*fut.result())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
