"""PPO on gymnasium control tasks, CartPole-v1 first (introduced in chapter 03): the config,
the trainer, policy checkpoints and the command line.

One flat trainer in CleanRL's order: roll out N vectorised environments for T steps,
compute GAE advantages, flatten, run epochs × minibatches of `ppo_core.losses.ppo_objective`,
stop early on a target KL, log, evaluate greedily, checkpoint. The network, the envs and
the rollouts (with gymnasium's autoreset handled) live in `ppo_core.rollout`; safetensors
checkpoints in `ppo_core.checkpoint`.

Shapes: T rollout steps, N environments, A actions, B = T·N flattened batch.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._checks import non_negative, positive_finite, unit_interval
from .advantages import explained_variance, whiten
from .checkpoint import (load_checkpoint, load_optimizer_tensors, optimizer_tensors,
                         save_checkpoint)
from .kl_control import make_kl_controller
from ._runtime import torch_threads
from .losses import categorical_kl_from_logp, entropy_from_logp, ppo_objective
from .metrics import MetricsLog
from .rollout import (ActorCritic, EnvState, Rollout, collect_rollout, evaluate, make_envs,
                      rollout_advantages)

__all__ = ["CartPoleConfig", "ActorCritic", "make_envs", "EnvState", "Rollout", "collect_rollout",
           "rollout_advantages", "train", "evaluate", "TrainResult", "TrainingDiverged",
           "save_policy", "load_policy", "cli_main"]


def _f(default, help: str, **kw):
    """A dataclass field whose help text is also the CLI's `--help` line."""
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class CartPoleConfig:
    """Every setting of one PPO run. Derived sizes are properties at the bottom.

    The defaults are tuned for wall-clock time to solve CartPole-v1 on a CPU: many
    environments and short rollouts (64 × 8), full-batch epochs (a 4-64-64 MLP costs about
    the same per gradient step for 64 or 512 samples, so fewer, larger steps win), γ and λ
    from rl-baselines3-zoo. `benchmarks/cartpole_time_to_solve.py` measures them.
    """

    # --- environment -----------------------------------------------------------------
    env_id: str = _f("CartPole-v1", "gymnasium id; any env with Discrete actions and Box observations")
    seed: int = _f(0, "seeds the network, the action sampling, minibatch order and the envs")
    num_envs: int = _f(64, "N, environments stepped in parallel")
    num_steps: int = _f(8, "T, steps per environment per rollout (batch = N·T)")
    total_steps: int = _f(100_000, "environment steps to train for (upper bound)")
    max_train_seconds: float | None = _f(None, "also stop once this many training seconds "
                                         "(evaluation excluded) have passed; None = no limit")
    # --- advantages --------------------------------------------------------------------
    gamma: float = _f(0.98, "discount γ")
    gae_lambda: float = _f(0.8, "GAE λ (1 = Monte-Carlo, 0 = one-step TD)")
    norm_adv: bool = _f(True, "whiten advantages (over each rollout's valid transitions)")
    # --- optimisation ------------------------------------------------------------------
    lr: float = _f(4e-3, "Adam learning rate (start value when annealed)")
    anneal_lr: bool = _f(True, "decay the learning rate linearly to 0 over total_steps")
    update_epochs: int = _f(12, "K, passes over each rollout")
    num_minibatches: int = _f(1, "minibatches per epoch (1 = full-batch epochs)")
    max_grad_norm: float = _f(0.5, "clip the global gradient norm to this (0 = off)")
    hidden: int = _f(64, "hidden units in each of the two tanh layers of actor and critic")
    # --- the PPO objective -------------------------------------------------------------
    clip_eps: float | None = _f(0.2, "clip range ε; None (CLI: 0 or 'none') switches clipping off")
    value_clip_eps: float | None = _f(None, "clip range of the value loss around old values; None = off")
    vf_coef: float = _f(0.5, "c_v, weight of the value loss")
    ent_coef: float = _f(0.0, "c_H, weight of the entropy bonus")
    target_kl: float | None = _f(None, "stop an update's epochs early once approx KL exceeds this")
    beta: float = _f(0.0, "β, KL-penalty coefficient (0 = no penalty)")
    kl_target: float | None = _f(None, "adapt β towards this KL per update (Ziegler et al.); None = fixed β")
    kl_horizon: float = _f(10_000, "horizon of the adaptive β controller, in samples")
    kl_reference: str = _f("rollout", "KL penalty KL(π_θ‖π_ref) against 'rollout' (π_ref = π_old, "
                           "as in the PPO paper's penalty variant, which writes the reverse direction "
                           "KL(π_old‖π_θ)) or 'initial' (a frozen copy of the first policy, as in RLHF)",
                           choices=("rollout", "initial"))
    # --- evaluation, logging, checkpoints ----------------------------------------------
    eval_every: int = _f(4096, "greedy evaluation every this many env steps (0 = never)")
    eval_episodes: int = _f(20, "episodes per greedy evaluation")
    target_return: float | None = _f(None, "stop at the first evaluation whose mean return reaches this")
    log_path: str | None = _f(None, "JSONL metrics log (one record per iteration)")
    save_dir: str | None = _f(None, "checkpoint directory (safetensors weights + JSON config)")
    save_every: int = _f(10, "checkpoint every this many iterations (and at the end)")
    resume: bool = _f(False, "continue from the checkpoint in save_dir, appending to the log")
    threads: int = _f(1, "torch CPU threads while training (a small MLP is fastest on 1)")
    progress: bool = _f(False, "show a tqdm progress bar")

    @property
    def batch_size(self) -> int:
        """B = N·T transitions per rollout (a few are invalid autoreset steps)."""
        return self.num_envs * self.num_steps

    @property
    def num_iterations(self) -> int:
        return max(1, self.total_steps // self.batch_size)

    def validate(self) -> "CartPoleConfig":
        for name in ("num_envs", "num_steps", "total_steps", "update_epochs", "num_minibatches",
                     "hidden", "eval_episodes", "save_every", "threads"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not isinstance(self.eval_every, int) or self.eval_every < 0:
            raise ValueError(f"eval_every must be an int >= 0, got {self.eval_every!r}")
        for name in ("gamma", "gae_lambda"):
            unit_interval(getattr(self, name), name)
        positive_finite(self.lr, "lr")
        for name in ("clip_eps", "value_clip_eps", "target_kl", "kl_target", "max_train_seconds"):
            positive_finite(getattr(self, name), name, allow_none=True)
        for name in ("vf_coef", "ent_coef", "beta", "max_grad_norm"):
            non_negative(getattr(self, name), name)
        if self.kl_target is not None and self.beta <= 0:
            raise ValueError(f"kl_target={self.kl_target} adapts β, so beta must start > 0, got {self.beta!r}")
        if self.kl_reference not in ("rollout", "initial"):
            raise ValueError(f"kl_reference must be 'rollout' or 'initial', got {self.kl_reference!r}")
        if self.num_minibatches > self.batch_size:
            raise ValueError(f"num_minibatches={self.num_minibatches} exceeds the batch of "
                             f"{self.batch_size} transitions")
        if self.resume and not self.save_dir:
            raise ValueError("resume=True needs save_dir (where the checkpoint is)")
        return self


class TrainingDiverged(FloatingPointError):
    """Raised when the loss or the parameters stop being finite; names the iteration."""


# --------------------------------------------------------------------------- results, checkpoints

@dataclass
class TrainResult:
    """What `train` returns: the records it logged (also in the JSONL file), the trained
    model, the global step at which `target_return` was first reached (None if never),
    and whether the run was interrupted (KeyboardInterrupt)."""

    records: list
    model: ActorCritic
    config: CartPoleConfig
    solved_step: int | None = None
    interrupted: bool = False

    @property
    def train_seconds(self) -> float:
        return self.records[-1]["perf/train_seconds"] if self.records else 0.0


def _config_dict(cfg: CartPoleConfig) -> dict:
    return asdict(cfg)


def _config_from_dict(d: dict) -> CartPoleConfig:
    names = {f.name for f in fields(CartPoleConfig)}
    return CartPoleConfig(**{k: v for k, v in d.items() if k in names})


def save_policy(directory, model: ActorCritic, config: CartPoleConfig, *, optimizer=None,
                reference=None, state=None, generator=None):
    """Checkpoint `model` (+ optimizer moments, frozen reference, sampling RNG, counters)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if reference is not None:
        tensors.update({f"reference.{k}": v for k, v in reference.state_dict().items()})
    if optimizer is not None:
        tensors.update(optimizer_tensors(optimizer))
    if generator is not None:
        tensors["rng.torch"] = generator.get_state()
    meta = dict(state or {}, obs_dim=model.obs_dim, n_actions=model.n_actions)
    return save_checkpoint(directory, tensors, _config_dict(config), meta)


def load_policy(directory) -> tuple[ActorCritic, CartPoleConfig]:
    """Load the model saved in `directory`; its outputs equal those of the saved model."""
    tensors, cfg, state = load_checkpoint(directory)
    config = _config_from_dict(cfg)
    model = ActorCritic(state["obs_dim"], state["n_actions"], config.hidden)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    return model, config


# --------------------------------------------------------------------------- the trainer

def train(config: CartPoleConfig | None = None, **overrides) -> TrainResult:
    """Train PPO; return a `TrainResult`. Keyword overrides replace config fields.

    One iteration, in CleanRL's order:
      1. roll out T steps in N envs with π_θ_old (sampling), storing s, a, log π_old(a|s),
         V(s), r, terminated, truncated, and which steps are valid transitions;
      2. GAE:  δ_t = r_t + γ V_next(t) − V(s_t),  Â_t = δ_t + γλ (1 − end_t) Â_{t+1},
         value targets R_t = Â_t + V(s_t);
      3. flatten the valid transitions into a batch of B' ≤ N·T;
      4. K epochs × M minibatches of `ppo_objective` (clip ε, KL penalty β, value loss,
         entropy bonus), gradient-norm clipping, Adam; stop the epochs early when the
         approximate KL to π_old exceeds `target_kl`;
      5. adapt β, log one record, evaluate greedily every `eval_every` steps, checkpoint.

    Each logged record holds the standard keys (DESIGN.md): `losses/*` averaged over the
    update's minibatches, `objective/kl` (KL(π_θ‖π_ref), exact over the A actions, averaged
    over the update's minibatches like the losses: against the rollout policy it is 0 at
    each update's first epoch; the adaptive β controller sees this average) and
    `objective/beta`, `charts/episodic_return` (mean return of the last 20
    finished training episodes, sampled actions), `perf/steps_per_second`,
    `perf/train_seconds` (cumulative, evaluation excluded), `global_step`, `iteration`,
    and `eval/return` (greedy, mean of `eval_episodes` episodes) on evaluation iterations.

    Raises TrainingDiverged (naming the iteration) on a non-finite loss or parameter.
    A KeyboardInterrupt ends training cleanly: the log keeps every finished iteration and
    the last checkpoint stays on disk; the result has `interrupted=True`.
    """
    cfg = copy.deepcopy(config) if config is not None else CartPoleConfig()
    for k, v in overrides.items():
        if not hasattr(cfg, k):
            raise ValueError(f"unknown config field {k!r}")
        setattr(cfg, k, v)
    cfg.validate()
    with torch_threads(cfg.threads):
        return _train(cfg)


def _train(cfg: CartPoleConfig) -> TrainResult:
    N, T = cfg.num_envs, cfg.num_steps
    envs = make_envs(cfg.env_id, N)
    eval_envs = make_envs(cfg.env_id, cfg.eval_episodes) if cfg.eval_every else None
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    A = int(envs.single_action_space.n)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = ActorCritic(obs_dim, A, cfg.hidden, seed=cfg.seed)
    params = list(model.parameters())
    optimizer = torch.optim.Adam(params, lr=cfg.lr, eps=1e-5, fused=True)
    reference = None
    if cfg.kl_reference == "initial":       # frozen π_ref; its KL is logged even when β = 0
        reference = copy.deepcopy(model).requires_grad_(False)
    kl_ctl = make_kl_controller(cfg.beta, cfg.kl_target, cfg.kl_horizon)
    start_iter, global_step, train_seconds, solved_step = 0, 0, 0.0, None

    if cfg.resume:
        try:
            tensors, _, saved = load_checkpoint(cfg.save_dir)
        except ValueError:
            envs.close()
            if eval_envs is not None:
                eval_envs.close()
            raise
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        if reference is not None:
            reference.load_state_dict({k[10:]: v for k, v in tensors.items() if k.startswith("reference.")})
        load_optimizer_tensors(optimizer, tensors)
        if "rng.torch" in tensors:
            gen.set_state(tensors["rng.torch"])
        start_iter, global_step = saved["iteration"], saved["global_step"]
        train_seconds = saved.get("train_seconds", 0.0)
        kl_ctl.beta = saved.get("beta", kl_ctl.beta)
    # resuming: the log keeps what the checkpoint holds; later iterations are redone
    log = MetricsLog(cfg.log_path, resume=cfg.resume,
                     keep=lambda r: r.get("iteration", 0) <= start_iter)

    def checkpoint(iteration):
        if cfg.save_dir:
            save_policy(cfg.save_dir, model, cfg, optimizer=optimizer, reference=reference,
                        generator=gen, state={"iteration": iteration, "global_step": global_step,
                                              "train_seconds": train_seconds, "beta": kl_ctl.beta,
                                              "solved_step": solved_step})

    state = EnvState.start(envs, seed=cfg.seed + 7919 * start_iter)
    recent: list[float] = []                  # returns of the last 20 finished episodes
    next_eval = (global_step // cfg.eval_every + 1) * cfg.eval_every if cfg.eval_every else None
    interrupted = False
    n_iter = cfg.num_iterations
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=n_iter, initial=start_iter, desc="PPO", leave=False)

    iteration = start_iter                    # iterations finished so far
    try:
        while (iteration < n_iter and solved_step is None
               and (cfg.max_train_seconds is None or train_seconds < cfg.max_train_seconds)):
            t0 = time.perf_counter()
            if cfg.anneal_lr:                                      # linear decay to 0
                optimizer.param_groups[0]["lr"] = cfg.lr * (1.0 - iteration / n_iter)

            # 1. rollout with π_θ_old ----------------------------------------------------
            ro = collect_rollout(model, envs, state, T, gen,
                                 ref_policy=reference or (model if cfg.beta > 0 else None))
            global_step += N * T

            # 2. advantages (GAE, episode boundaries respected) ---------------------------
            adv, ret = rollout_advantages(ro, cfg.gamma, cfg.gae_lambda)

            # 3. flatten the valid transitions: (T, N) → (B',) ----------------------------
            v = ro.valid
            b_obs, b_act, b_logp, b_val = ro.obs[v], ro.actions[v], ro.logp[v], ro.values[v]
            b_adv, b_ret = adv[v], ret[v]
            if cfg.norm_adv:
                b_adv = whiten(b_adv)                    # (Â − mean) / std over the batch
            b_ref = (torch.log_softmax(ro.ref_logits[v], -1)        # log π_ref(·|s), once
                     if ro.ref_logits is not None else None)
            B = b_obs.shape[0]
            mb_size = max(2, B // cfg.num_minibatches)

            # 4. K epochs × M minibatches of the PPO objective ------------------------------
            sums, count, epochs_done = {}, 0, 0
            for epoch in range(cfg.update_epochs):
                if cfg.num_minibatches == 1:
                    minibatches = [slice(None)]             # full batch: order does not matter
                else:
                    perm = torch.randperm(B, generator=gen)
                    minibatches = [perm[i:i + mb_size] for i in range(0, B - mb_size + 1, mb_size)]
                epoch_kl = []
                for mb in minibatches:
                    logits, values = model(b_obs[mb])                         # (b, A), (b,)
                    logp_all = torch.log_softmax(logits, -1)                  # (b, A)
                    logp = logp_all.gather(1, b_act[mb, None]).squeeze(1)     # log π_θ(a|s)
                    kl = None
                    if b_ref is not None:            # exact KL(π_θ‖π_ref) = Σ_a π_θ(a)·log(π_θ(a)/π_ref(a))
                        kl = categorical_kl_from_logp(logp_all, b_ref[mb])
                    entropy = entropy_from_logp(logp_all)                   # H(π_θ(·|s)), (b,)
                    if cfg.ent_coef == 0:
                        entropy = entropy.detach()          # logged only: skip its backward
                    loss, stats = ppo_objective(
                        logp, b_logp[mb], b_adv[mb], cfg.clip_eps, beta=kl_ctl.beta, kl=kl,
                        values=values, old_values=b_val[mb], returns=b_ret[mb],
                        value_clip_eps=cfg.value_clip_eps, vf_coef=cfg.vf_coef,
                        entropy=entropy, ent_coef=cfg.ent_coef)
                    if not math.isfinite(stats["loss"]):
                        raise ValueError(f"the loss is non-finite ({stats['loss']})")
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.max_grad_norm > 0:
                        nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                    optimizer.step()
                    for k, val in stats.items():
                        sums[k] = sums.get(k, 0.0) + val
                    count += 1
                    epoch_kl.append(stats["approx_kl"])
                epochs_done = epoch + 1
                if cfg.target_kl is not None and np.mean(epoch_kl) > cfg.target_kl:
                    break                                   # early stop: π moved far enough
            for name, p in model.named_parameters():
                if not bool(torch.isfinite(p).all()):
                    raise ValueError(f"parameter {name} is non-finite after the update")

            # 5. β, log, evaluate, checkpoint ---------------------------------------------
            mean = {k: val / max(count, 1) for k, val in sums.items()}
            kl_ctl.update(mean["kl_ref"], B)
            explained = explained_variance(b_ret, b_val)
            train_seconds += time.perf_counter() - t0
            recent = (recent + ro.episode_returns)[-20:]
            iteration += 1
            rec = {
                "iteration": iteration,
                "global_step": global_step,
                "losses/policy_loss": mean["policy_loss"],
                "losses/value_loss": mean["value_loss"],
                "losses/entropy": mean["entropy"],
                "losses/approx_kl": mean["approx_kl"],
                "losses/approx_kl_k3": mean["approx_kl_k3"],
                "losses/clipfrac": mean["clipfrac"],
                "losses/ratio_max": mean["ratio_max"],
                "losses/explained_variance": explained,
                "losses/epochs": epochs_done,
                "objective/kl": mean["kl_ref"],
                "objective/beta": mean["beta"],
                "charts/learning_rate": optimizer.param_groups[0]["lr"],
                "charts/episodes": state.episodes,
                "perf/steps_per_second": (N * T) / max(time.perf_counter() - t0, 1e-9),
                "perf/train_seconds": train_seconds,
            }
            if recent:
                rec["charts/episodic_return"] = float(np.mean(recent))
            if next_eval is not None and global_step >= next_eval:
                while next_eval <= global_step:
                    next_eval += cfg.eval_every
                rec["eval/return"] = evaluate(model, cfg.env_id, cfg.eval_episodes,
                                              seed=cfg.seed + 104_729 + iteration, envs=eval_envs)
                if cfg.target_return is not None and rec["eval/return"] >= cfg.target_return:
                    solved_step = global_step
            bad = [k for k, val in rec.items() if isinstance(val, float) and not math.isfinite(val)]
            if bad:
                iteration -= 1
                raise ValueError(f"non-finite metrics {bad}")
            log.write(rec)
            if bar is not None:
                bar.update(1)
                if "eval/return" in rec:
                    bar.set_postfix(eval_return=f"{rec['eval/return']:.0f}")
            if iteration % cfg.save_every == 0:
                checkpoint(iteration)
    except ValueError as e:
        if "non-finite" not in str(e):
            raise
        raise TrainingDiverged(
            f"training diverged at iteration {iteration + 1} (global step {global_step}, "
            f"lr={cfg.lr}): {e}. Nothing from this iteration was logged or saved; try a "
            f"smaller learning rate or a clip range.") from e
    except KeyboardInterrupt:
        interrupted = True
        print(f"Interrupted during iteration {iteration}: the log keeps {len(log.records)} "
              f"records" + (f", the last checkpoint stays in {cfg.save_dir}" if cfg.save_dir else ""),
              file=sys.stderr)
    finally:
        log.close()
        envs.close()
        if eval_envs is not None:
            eval_envs.close()
        if bar is not None:
            bar.close()
    if not interrupted and iteration % cfg.save_every != 0:
        checkpoint(iteration)
    return TrainResult(log.records, model, cfg, solved_step, interrupted)


# --------------------------------------------------------------------------- command line

def _optional_float(text: str):
    if text.lower() in ("none", "off", "0", "0.0"):
        return None
    return float(text)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ppo_core cartpole",
        description="Train PPO (actor-critic, GAE, clipped surrogate, optional KL penalty) on a "
                    "gymnasium task with discrete actions. Writes a JSONL log with --log and "
                    "safetensors checkpoints with --save.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    cli_names = {"log_path": "--log", "save_dir": "--save", "update_epochs": "--epochs",
                 "num_minibatches": "--minibatches"}
    for f in fields(CartPoleConfig):
        flag = cli_names.get(f.name, "--" + f.name.replace("_", "-"))
        help_ = f.metadata["help"]
        if f.type in ("bool", bool):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                           default=f.default, help=help_)
        elif f.name in ("clip_eps", "value_clip_eps", "target_kl", "kl_target", "target_return",
                        "max_train_seconds"):
            p.add_argument(flag, dest=f.name, type=_optional_float, default=f.default,
                           metavar="X|none", help=help_)
        elif f.name in ("log_path", "save_dir"):
            p.add_argument(flag, dest=f.name, default=None, metavar="PATH", help=help_)
        else:
            typ = {"int": int, "float": float, "str": str}[str(f.type)]
            p.add_argument(flag, dest=f.name, type=typ, default=f.default,
                           choices=f.metadata.get("choices"), help=help_)
    return p


def cli_main(argv=None) -> int:
    """`python -m ppo_core cartpole [flags]`; see `--help`. Returns the exit status:
    0 done (or solved), 1 diverged, 130 interrupted."""
    args = _parser().parse_args(argv)
    cfg = CartPoleConfig(**vars(args))
    try:
        cfg.validate()
        result = train(cfg)
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    last = result.records[-1] if result.records else {}
    evals = [r["eval/return"] for r in result.records if "eval/return" in r]
    msg = (f"{last.get('global_step', 0)} steps in {result.train_seconds:.1f} s of training; "
           f"last greedy eval {evals[-1]:.1f}" if evals else
           f"{last.get('global_step', 0)} steps in {result.train_seconds:.1f} s of training")
    if result.solved_step is not None:
        msg += f"; reached {cfg.target_return} at step {result.solved_step}"
    print(msg)
    if cfg.log_path:
        print(f"log: {Path(cfg.log_path)}")
    if cfg.save_dir:
        print(f"checkpoint: {Path(cfg.save_dir)}")
    return 130 if result.interrupted else 0
