"""Time to solve CartPole-v1: ppo_core against Stable-Baselines3's PPO, same machine, same run.

Criterion for both methods (identical code path, `ppo_core.trainers.cartpole.evaluate_greedy`): every 4096
environment steps, run the *greedy* policy for 20 episodes; the task counts as solved at the
first evaluation whose mean return is >= 475. Training seconds exclude evaluation time and
the one-off construction of the environments and the model. Both use torch on the CPU with
the same number of threads (--threads, default 1: a 4-64-64 MLP is fastest single-threaded).

Stable-Baselines3 runs rl-baselines3-zoo's tuned CartPole-v1 hyperparameters
(hyperparams/ppo.yml): n_envs 8, n_steps 32, batch_size 256, gae_lambda 0.8, gamma 0.98,
n_epochs 20, ent_coef 0.0, learning_rate lin_0.001, clip_range lin_0.2, n_timesteps 1e5.
ppo_core runs its CartPole defaults (`CartPoleConfig()`), also capped at 1e5 steps.

    pip install -r benchmarks/requirements-bench.txt
    python benchmarks/cartpole_time_to_solve.py             # 10 seeds each
    python benchmarks/cartpole_time_to_solve.py --seeds 3 --methods ppo_core

Prints, per method: solved count, median env steps to solve, median training seconds to
solve (over solved seeds), and the ratio of ppo_core's median seconds to SB3's.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ppo_core.trainers.cartpole import CartPoleConfig, evaluate_greedy, train

ENV_ID = "CartPole-v1"
TARGET = 475.0
EVAL_EVERY = 4096
EVAL_EPISODES = 20
TOTAL = 100_000


def run_ppo_core(seed: int) -> tuple[int | None, float]:
    result = train(CartPoleConfig(seed=seed, total_steps=TOTAL, target_return=TARGET,
                                  eval_every=EVAL_EVERY, eval_episodes=EVAL_EPISODES))
    if result.interrupted:           # Ctrl-C or SIGTERM: stop the sweep, not just this run
        raise KeyboardInterrupt(f"stopped during seed {seed}")
    return result.solved_step, result.train_seconds


def run_sb3(seed: int) -> tuple[int | None, float]:
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    class EvalAndStop(BaseCallback):
        """Greedy evaluation every 4096 env steps; stop at the first mean >= TARGET."""

        def __init__(self):
            super().__init__()
            self.eval_seconds, self.solved_step, self.t_start, self.t_end = 0.0, None, 0.0, 0.0

        def _on_training_start(self):
            self.t_start = time.perf_counter()

        def _on_step(self) -> bool:
            if self.num_timesteps % EVAL_EVERY:
                return True
            t0 = time.perf_counter()
            policy = lambda obs: self.model.predict(obs, deterministic=True)[0]  # noqa: E731
            mean = evaluate_greedy(policy, ENV_ID, EVAL_EPISODES, seed=seed + 104_729 + self.num_timesteps)
            self.eval_seconds += time.perf_counter() - t0
            if mean >= TARGET:
                self.solved_step = self.num_timesteps
                return False
            return True

        def _on_training_end(self):
            self.t_end = time.perf_counter()

    env = make_vec_env(ENV_ID, n_envs=8, seed=seed)
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98,
                n_epochs=20, ent_coef=0.0, learning_rate=lambda p: 0.001 * p,
                clip_range=lambda p: 0.2 * p, seed=seed, device="cpu", verbose=0)
    cb = EvalAndStop()
    model.learn(total_timesteps=TOTAL, callback=cb)
    env.close()
    return cb.solved_step, (cb.t_end - cb.t_start) - cb.eval_seconds


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=10, help="seeds per method (0 .. seeds-1)")
    p.add_argument("--methods", default="ppo_core,sb3", help="comma-separated: ppo_core, sb3")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for both methods")
    args = p.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    runners = {"ppo_core": run_ppo_core, "sb3": run_sb3}
    for m in methods:
        if m not in runners:
            raise SystemExit(f"unknown method {m!r}; choose from {sorted(runners)}")
    torch.set_num_threads(args.threads)

    # warm-up: the first optimizer step of a process imports parts of torch (~1-3 s);
    # neither method should be charged for that
    train(CartPoleConfig(total_steps=512, num_envs=32, num_steps=16, eval_every=0))

    # seeds interleaved (ppo_core seed 0, sb3 seed 0, ppo_core seed 1, ...) so that both
    # methods see the same background load on a shared machine
    rows = {m: [] for m in methods}
    for seed in range(args.seeds):
        for m in methods:
            step, secs = runners[m](seed)
            rows[m].append((step, secs))
            print(f"{m:9s} seed {seed}: " + (f"solved at {step:6d} steps, {secs:6.2f} s training"
                                             if step is not None else
                                             f"NOT solved in {TOTAL} steps, {secs:6.2f} s"), flush=True)
    summary = {}
    for m in methods:
        solved = [(s, t) for s, t in rows[m] if s is not None]
        summary[m] = {
            "solved": len(solved),
            "median_steps": statistics.median(s for s, _ in solved) if solved else float("nan"),
            "median_seconds": statistics.median(t for _, t in solved) if solved else float("nan"),
        }

    print(f"\nCartPole-v1, greedy eval of {EVAL_EPISODES} episodes >= {TARGET:g} every "
          f"{EVAL_EVERY} steps, {args.seeds} seeds, {args.threads} torch thread(s)")
    print(f"{'method':10s} {'solved':>8s} {'median steps':>13s} {'median train s':>15s}")
    for m, s in summary.items():
        print(f"{m:10s} {s['solved']:>5d}/{args.seeds:<2d} {s['median_steps']:>13,.0f} "
              f"{s['median_seconds']:>15.2f}")
    if "ppo_core" in summary and "sb3" in summary:
        ratio = summary["ppo_core"]["median_seconds"] / summary["sb3"]["median_seconds"]
        print(f"ratio of median training seconds, ppo_core / sb3: {ratio:.2f} "
              f"(target <= 0.33); steps ratio "
              f"{summary['ppo_core']['median_steps'] / summary['sb3']['median_steps']:.2f}")


if __name__ == "__main__":
    main()
