"""PPO on gymnasium control tasks, CartPole-v1 first (introduced in chapter 03): the config,
the trainer, policy checkpoints and the command line.

One flat trainer in CleanRL's order: roll out N vectorised environments for T steps,
compute GAE advantages, flatten, run epochs × minibatches of `ppo_core.losses.ppo_objective`,
stop early on a target KL, log, evaluate greedily, checkpoint. The network, the envs and
the rollouts (with gymnasium's autoreset handled) live in `ppo_core.trainers.rollout`;
safetensors checkpoints in `ppo_core.trainers.checkpoint`; the log, progress bar, interrupts
and divergence in `ppo_core.trainers.run`.

Shapes: T rollout steps, N environments, A actions, B = T·N flattened batch.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._checks import non_negative, positive_finite, unit_interval
from ..advantages import explained_variance, whiten
from .._runtime import torch_threads
from ..kl_control import make_kl_controller
from ..losses import categorical_kl_from_logp, entropy_from_logp, ppo_objective
from .checkpoint import (META, WEIGHTS, load_checkpoint, load_optimizer_tensors, optimizer_tensors,
                         save_checkpoint)
from .config import TrainerConfig, arg, build_parser, check_clip_eps, run_cli
from .rollout import (ActorCritic, EnvState, Rollout, collect_rollout, evaluate_greedy,
                      make_envs, record_video, rollout_advantages)
from .run import MinibatchStats, Run, TrainingDiverged, check_finite, check_output_paths, losses_record

__all__ = ["CartPoleConfig", "ActorCritic", "make_envs", "EnvState", "Rollout", "collect_rollout",
           "rollout_advantages", "train", "evaluate_greedy", "record_video", "TrainResult",
           "TrainingDiverged", "save_agent", "load_agent", "cli_main"]


_f = arg


@dataclass
class CartPoleConfig(TrainerConfig):
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
    update_epochs: int = _f(12, "K, passes over each rollout", flag="--epochs")
    num_minibatches: int = _f(1, "minibatches per epoch (1 = full-batch epochs)", flag="--minibatches")
    max_grad_norm: float = _f(0.5, "clip the global gradient norm to this (0 = off)")
    hidden: int = _f(64, "hidden units in each of the two tanh layers of actor and critic")
    # --- the PPO objective -------------------------------------------------------------
    clip_eps: float | None = _f(0.2, "clip range ε; None (CLI: 0 or 'none') switches clipping off",
                                zero_is_none=True)
    value_clip_eps: float | None = _f(None, "clip range of the value loss around old values; None = off",
                                      zero_is_none=True)
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
    log_path: str | None = _f(None, "JSONL metrics log (one record per iteration)", flag="--log")
    save_dir: str | None = _f(None, "checkpoint directory (safetensors weights + JSON config)",
                              flag="--save")
    save_every: int = _f(10, "checkpoint every this many iterations (and at the end)")
    tensorboard_dir: str | None = _f(None, "also write the log's numbers as TensorBoard scalars "
                                     "here (step = global_step)", flag="--tensorboard")
    video_path: str | None = _f(None, "after training, write one greedy episode of the trained "
                                "agent here as a GIF (200 steps, needs pygame)", flag="--video")
    resume: bool = _f(False, "continue from the checkpoint in save_dir, appending to the log")
    overwrite: bool = _f(False, "replace an existing log and checkpoint instead of refusing")
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
        if not isinstance(self.env_id, str) or not self.env_id:
            raise ValueError(f"env_id must be a gymnasium id, got {self.env_id!r}")
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
        positive_finite(self.kl_horizon, "kl_horizon")
        if self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        check_clip_eps(self.clip_eps)
        for name in ("vf_coef", "ent_coef", "beta", "max_grad_norm"):
            non_negative(getattr(self, name), name)
        if self.kl_target is not None and self.beta <= 0:
            raise ValueError(f"kl_target={self.kl_target} adapts β, so beta must start > 0, got {self.beta!r}")
        if self.kl_reference not in ("rollout", "initial"):
            raise ValueError(f"kl_reference must be 'rollout' or 'initial', got {self.kl_reference!r}")
        if self.num_envs > MAX_ENVS:
            raise ValueError(f"num_envs must be at most {MAX_ENVS} (each is a Python object "
                             f"stepped every iteration), got {self.num_envs!r}")
        if self.target_return is not None and not math.isfinite(float(self.target_return)):
            raise ValueError(f"target_return must be a finite number or None, got "
                             f"{self.target_return!r}")
        if self.num_minibatches > self.batch_size:
            raise ValueError(f"num_minibatches={self.num_minibatches} exceeds the batch of "
                             f"{self.batch_size} transitions")
        if self.video_path is not None and not str(self.video_path).lower().endswith(".gif"):
            raise ValueError(f"video_path must end in .gif, got {self.video_path!r}")
        if self.resume and not self.save_dir:
            raise ValueError("resume=True needs save_dir (where the checkpoint is)")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other")
        return self


MAX_ENVS = 4096
"""The most environments `num_envs` may ask for (beyond it the vector env's set-up alone
takes minutes and memory grows without a gain in speed)."""


# --------------------------------------------------------------------------- results, checkpoints

@dataclass
class TrainResult:
    """What `train` returns: the records it logged (also in the JSONL file), the trained
    model, the global step at which `target_return` was first reached (None if never),
    whether the run was interrupted (KeyboardInterrupt), and what `record_video` wrote
    when `video_path` was set."""

    records: list
    model: ActorCritic
    config: CartPoleConfig
    solved_step: int | None = None
    interrupted: bool = False
    stop_signal: int | None = None
    video: dict | None = None

    @property
    def train_seconds(self) -> float:
        return self.records[-1]["perf/train_seconds"] if self.records else 0.0


def checkpoint_files(directory) -> set[str]:
    """The files of a CartPole checkpoint in `directory` (empty if it holds none)."""
    from ..lm.cache import _MANIFEST

    d = Path(directory)
    return {n for n in (WEIGHTS, META, _MANIFEST) if (d / n).exists()} if (d / META).is_file() else set()


def save_agent(model: ActorCritic, directory, config: CartPoleConfig, *, optimizer=None,
                reference=None, state=None, generator=None):
    """Checkpoint `model` into `directory` (+ optimizer moments, frozen reference, sampling
    RNG, counters): the model, then where, then its config."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if reference is not None:
        tensors.update({f"reference.{k}": v for k, v in reference.state_dict().items()})
    if optimizer is not None:
        tensors.update(optimizer_tensors(optimizer))
    if generator is not None:
        tensors["rng.torch"] = generator.get_state()
    meta = dict(state or {}, obs_dim=model.obs_dim, n_actions=model.n_actions)
    return save_checkpoint(directory, tensors, config.to_dict(), meta)


def load_agent(directory) -> tuple[ActorCritic, CartPoleConfig]:
    """Load the model saved in `directory`; its outputs equal those of the saved model."""
    tensors, cfg, state = load_checkpoint(directory)
    config = CartPoleConfig.from_dict(cfg)
    model = ActorCritic(state["obs_dim"], state["n_actions"], config.hidden)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    return model, config


# --------------------------------------------------------------------------- the trainer

def train(config: CartPoleConfig | None = None, **overrides) -> TrainResult:
    """Train PPO; return a `TrainResult`. Keyword overrides replace config fields.

    One iteration, in CleanRL's order (`_iteration`):
      1. roll out T steps in N envs with π_θ_old (sampling), storing s, a, log π_old(a|s),
         V(s), r, terminated, truncated, and which steps are valid transitions;
      2. GAE:  δ_t = r_t + γ V_next(t) − V(s_t),  Â_t = δ_t + γλ (1 − end_t) Â_{t+1},
         value targets R_t = Â_t + V(s_t);
      3. flatten the valid transitions into a batch of B' ≤ N·T;
      4. K epochs × M minibatches of `ppo_objective` (clip ε, KL penalty β, value loss,
         entropy bonus), gradient-norm clipping, Adam; stop the epochs early when the
         mean k3 estimate of KL(π_old‖π_θ) over an epoch exceeds `target_kl`;
      5. adapt β, log one record, evaluate greedily every `eval_every` steps, checkpoint.

    Each logged record holds the standard keys (README): `losses/*` averaged over the
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

    `tensorboard_dir` also writes every record's numbers as TensorBoard scalars (step =
    `global_step`); `video_path` writes one greedy episode of the trained agent as a GIF
    (`ppo_core.trainers.rollout.record_video`, seed = `seed`; not after an interrupt).
    """
    cfg = config if config is not None else CartPoleConfig()
    cfg = cfg.replace(**overrides) if overrides else cfg.replace()
    check_output_paths(cfg.log_path, cfg.save_dir, cfg.resume, cfg.overwrite,
                       checkpoint_files=checkpoint_files, tensorboard_dir=cfg.tensorboard_dir,
                       video_path=cfg.video_path)
    with torch_threads(cfg.threads):
        result = _train(cfg)
        if cfg.video_path and not result.interrupted:
            result.video = record_video(result.model, cfg.env_id, cfg.video_path, seed=cfg.seed)
    return result


@dataclass
class _State:
    """What the loop carries from one iteration to the next (and a checkpoint restores)."""
    model: ActorCritic
    optimizer: torch.optim.Optimizer
    reference: ActorCritic | None
    gen: torch.Generator
    kl_ctl: object
    iteration: int = 0
    global_step: int = 0
    train_seconds: float = 0.0
    solved_step: int | None = None


def _setup(cfg: CartPoleConfig, envs) -> _State:
    """Model, optimizer, π_ref and RNG; restored from `save_dir` when resuming."""
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    A = int(envs.single_action_space.n)
    model = ActorCritic(obs_dim, A, cfg.hidden, seed=cfg.seed)
    st = _State(model, torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=1e-5, fused=True),
                copy.deepcopy(model).requires_grad_(False) if cfg.kl_reference == "initial" else None,
                torch.Generator().manual_seed(cfg.seed),
                make_kl_controller(cfg.beta, cfg.kl_target, cfg.kl_horizon))
    if not cfg.resume:
        return st
    tensors, saved_cfg, saved = load_checkpoint(cfg.save_dir)
    for name in ("env_id", "hidden", "kl_reference"):
        if saved_cfg.get(name, getattr(cfg, name)) != getattr(cfg, name):
            raise ValueError(f"cannot resume {cfg.save_dir!r} with {name}={getattr(cfg, name)!r}: "
                             f"its checkpoint was trained with {name}={saved_cfg[name]!r}")
    st.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    if st.reference is not None:
        st.reference.load_state_dict({k[10:]: v for k, v in tensors.items()
                                      if k.startswith("reference.")})
    load_optimizer_tensors(st.optimizer, tensors)
    if "rng.torch" in tensors:
        st.gen.set_state(tensors["rng.torch"])
    st.iteration, st.global_step = saved["iteration"], saved["global_step"]
    st.train_seconds = saved.get("train_seconds", 0.0)
    st.solved_step = saved.get("solved_step")
    st.kl_ctl.beta = saved.get("beta", st.kl_ctl.beta)
    return st


def _train(cfg: CartPoleConfig) -> TrainResult:
    envs = make_envs(cfg.env_id, cfg.num_envs)
    eval_envs = make_envs(cfg.env_id, cfg.eval_episodes) if cfg.eval_every else None
    try:
        st = _setup(cfg, envs)
        env_state = EnvState.start(envs, seed=cfg.seed + 7919 * st.iteration)
        n_iter = cfg.num_iterations
        next_eval = ((st.global_step // cfg.eval_every + 1) * cfg.eval_every
                     if cfg.eval_every else None)
        recent: list[float] = []                  # returns of the last 20 finished episodes

        def save(iteration, final):
            save_agent(st.model, cfg.save_dir, cfg, optimizer=st.optimizer,
                       reference=st.reference, generator=st.gen,
                       state={"iteration": iteration, "global_step": st.global_step,
                              "train_seconds": st.train_seconds, "beta": st.kl_ctl.beta,
                              "solved_step": st.solved_step})

        run = Run(cfg.log_path, resume=cfg.resume, overwrite=cfg.overwrite, total=n_iter,
                  initial=st.iteration, desc="PPO", progress=cfg.progress,
                  tensorboard_dir=cfg.tensorboard_dir, step_key="global_step",
                  save=save if cfg.save_dir else None, save_every=cfg.save_every,
                  postfix=lambda r: {"eval_return": f"{r['eval/return']:.0f}"} if "eval/return" in r else {})
        with run:
            for _ in run.iterations(st.iteration, n_iter):
                if st.solved_step is not None or (cfg.max_train_seconds is not None
                                                  and st.train_seconds >= cfg.max_train_seconds):
                    break
                rec, ro = _iteration(cfg, st, envs, env_state)
                recent = (recent + ro.episode_returns)[-20:]
                if recent:
                    rec["charts/episodic_return"] = float(np.mean(recent))
                if next_eval is not None and st.global_step >= next_eval:
                    while next_eval <= st.global_step:
                        next_eval += cfg.eval_every
                    rec["eval/return"] = evaluate_greedy(st.model, cfg.env_id, cfg.eval_episodes,
                                                         seed=cfg.seed + 104_729 + st.iteration,
                                                         envs=eval_envs)
                    if cfg.target_return is not None and rec["eval/return"] >= cfg.target_return:
                        st.solved_step = st.global_step
                run.log_record(rec)
    finally:
        envs.close()
        if eval_envs is not None:
            eval_envs.close()
    return TrainResult(run.records, st.model, cfg, st.solved_step, run.interrupted,
                       run.stop_signal)


def _iteration(cfg: CartPoleConfig, st: _State, envs, env_state: EnvState):
    """One PPO iteration in CleanRL's order; returns (log record, rollout)."""
    t0 = time.perf_counter()
    N, T = cfg.num_envs, cfg.num_steps
    model, optimizer = st.model, st.optimizer
    if cfg.anneal_lr:                                          # linear decay to 0
        optimizer.param_groups[0]["lr"] = cfg.lr * (1.0 - st.iteration / cfg.num_iterations)
    # 1. roll out with π_θ_old ------------------------------------------------------------
    ro = collect_rollout(model, envs, env_state, T, st.gen,
                         ref_policy=st.reference or (model if cfg.beta > 0 else None))
    # 2. advantages (GAE, episode boundaries respected) -------------------------------------
    adv, ret = rollout_advantages(ro, cfg.gamma, cfg.gae_lambda)                # (T, N)
    # 3. flatten the valid transitions: (T, N) → (B',) --------------------------------------
    v = ro.valid                                                                # (T, N) bool
    b_obs, b_act, b_logp, b_val = ro.obs[v], ro.actions[v], ro.logp[v], ro.values[v]  # (B', ·)
    b_adv, b_ret = adv[v], ret[v]                                               # (B',)
    if cfg.norm_adv:
        b_adv = whiten(b_adv)                                # (Â − mean) / std over the batch
    b_ref = (torch.log_softmax(ro.ref_logits[v], -1)                            # (B', A), once
             if ro.ref_logits is not None else None)
    B = b_obs.shape[0]
    mb_size = max(2, B // cfg.num_minibatches)
    # 4. K epochs × M minibatches of the PPO objective ---------------------------------------
    stats, epochs_done = MinibatchStats(), 0
    for epoch in range(cfg.update_epochs):
        if cfg.num_minibatches == 1:
            minibatches = [slice(None)]                     # full batch: order does not matter
        else:
            perm = torch.randperm(B, generator=st.gen)
            minibatches = [perm[i:i + mb_size] for i in range(0, B - mb_size + 1, mb_size)]
        epoch_kl = []
        for mb in minibatches:
            logits, values = model(b_obs[mb])                                   # (b, A), (b,)
            logp_all = torch.log_softmax(logits, -1)                            # (b, A)
            logp = logp_all.gather(1, b_act[mb, None]).squeeze(1)               # (b,) log π_θ(a|s)
            # exact KL(π_θ‖π_ref) = Σ_a π_θ(a)·log(π_θ(a)/π_ref(a)), (b,)
            kl = categorical_kl_from_logp(logp_all, b_ref[mb]) if b_ref is not None else None
            entropy = entropy_from_logp(logp_all)                               # (b,) H(π_θ(·|s))
            if cfg.ent_coef == 0:
                entropy = entropy.detach()                  # logged only: skip its backward
            loss, mb_stats = ppo_objective(                 # every tensor below is (b,)
                logp, b_logp[mb], b_adv[mb], cfg.clip_eps, beta=st.kl_ctl.beta, kl=kl,
                values=values, old_values=b_val[mb], returns=b_ret[mb],
                value_clip_eps=cfg.value_clip_eps, vf_coef=cfg.vf_coef,
                entropy=entropy, ent_coef=cfg.ent_coef)
            check_finite(mb_stats["loss"], f"the loss (epoch {epoch})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            stats.add(mb_stats)
            epoch_kl.append(mb_stats["approx_kl_k3"])       # k3 ≥ 0, as CleanRL's early stop
        epochs_done = epoch + 1
        if cfg.target_kl is not None and np.mean(epoch_kl) > cfg.target_kl:
            break                                           # early stop: π moved far enough
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            raise TrainingDiverged(f"parameter {name} is non-finite after the update")
    # 5. β, the log record ------------------------------------------------------------------
    mean = stats.mean()
    st.kl_ctl.update(mean["kl_ref"], B)
    st.train_seconds += time.perf_counter() - t0
    st.global_step += N * T
    st.iteration += 1
    rec = {"iteration": st.iteration, "global_step": st.global_step, **losses_record(stats),
           "losses/explained_variance": explained_variance(b_ret, b_val),
           "losses/epochs": epochs_done,
           "losses/ratio_max": mean["ratio_max"],        # mean over minibatches of each one's max
           "objective/kl": mean["kl_ref"], "objective/beta": mean["beta"],
           "charts/learning_rate": optimizer.param_groups[0]["lr"],
           "charts/episodes": env_state.episodes,
           "perf/steps_per_second": (N * T) / max(time.perf_counter() - t0, 1e-9),
           "perf/train_seconds": st.train_seconds}
    rec.pop("losses/kl_ref", None)                          # logged as objective/kl
    return rec, ro


# --------------------------------------------------------------------------- command line

def cli_parser():
    """The `python -m ppo_core cartpole` parser: one flag per `CartPoleConfig` field."""
    return build_parser(
        CartPoleConfig, prog="python -m ppo_core cartpole",
        description="Train PPO (actor-critic, GAE, clipped surrogate, optional KL penalty) on a "
                    "gymnasium task with discrete actions. Writes a JSONL log with --log, "
                    "TensorBoard scalars with --tensorboard, safetensors checkpoints with "
                    "--save and the trained agent's episode as a GIF with --video.")


def _summary(result: TrainResult, cfg: CartPoleConfig) -> None:
    last = result.records[-1] if result.records else {}
    evals = [r["eval/return"] for r in result.records if "eval/return" in r]
    msg = f"{last.get('global_step', 0)} steps in {result.train_seconds:.1f} s of training"
    if evals:
        msg += f"; last greedy eval {evals[-1]:.1f}"
    if result.solved_step is not None:
        msg += f"; reached {cfg.target_return} at step {result.solved_step}"
    print(msg)
    if cfg.log_path:
        print(f"log: {Path(cfg.log_path)}")
    if cfg.save_dir:
        print(f"checkpoint: {Path(cfg.save_dir)}")
    if cfg.tensorboard_dir:
        print(f"tensorboard: {Path(cfg.tensorboard_dir)}  (tensorboard --logdir {cfg.tensorboard_dir})")
    if result.video:
        v = result.video
        print(f"video: {v['path']} ({v['steps']} steps, return {v['return']:.0f}, "
              f"{v['bytes'] / 1024:.0f} kB)")


def cli_main(argv=None) -> int:
    """`python -m ppo_core cartpole [flags]`; see `--help`. Exit status as
    `ppo_core.trainers.config.run_cli`: 0 done (or solved), 1 diverged, 2 a usage error,
    130/143 stopped by Ctrl-C/SIGTERM."""
    return run_cli(CartPoleConfig, cli_parser(), argv, train, _summary)
