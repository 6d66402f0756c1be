"""Experience for on-policy PPO: the actor-critic, vectorised gymnasium envs, rollouts that
respect episode boundaries, GAE on them, greedy evaluation, and one episode as a GIF
(`record_video`; introduced in chapter 03).

Episode bookkeeping under gymnasium ≥ 1.0's NEXT_STEP autoreset
-------------------------------------------------------------------
When an episode ends at step t, `step` returns the *final* observation of that episode
(with terminated or truncated set). The *next* call to `step` ignores its action, resets the
environment and returns the first observation of the new episode with reward 0. So in a
rollout of length T the step after each episode end is not a real transition: its
"observation" is the dead final state. We keep it in the arrays (so everything stays
`(T, N)`) but mark it invalid, and it never enters a loss. For the real transitions:

* terminated at t (the pole fell):  V_next = 0, nothing is bootstrapped;
* truncated at t (the 500-step time limit): V_next = V(s_{t+1}), the value of the final
  observation, which is exactly the observation stored at step t+1 (or the observation
  after the rollout, for t = T−1); `gae(truncated=..., final_values=...)` uses it;
* GAE's recursion stops at every episode end, so no advantage leaks across a boundary.

Shapes: T rollout steps, N environments, A actions, B batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from .._checks import NonFiniteError
from ..advantages import gae

__all__ = ["ActorCritic", "make_envs", "evaluate_greedy", "record_video", "EnvState", "Rollout",
           "collect_rollout", "rollout_advantages"]


# --------------------------------------------------------------------------- network

def _layer(n_in: int, n_out: int, gain: float, gen: torch.Generator) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.orthogonal_(layer.weight, gain, generator=gen)
    nn.init.zeros_(layer.bias)
    return layer


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs (two tanh layers each), orthogonal initialisation.

        logits = actor(s)   (B, A)      π_θ(·|s) = softmax(logits)
        value  = critic(s)  (B,)        V_φ(s)

    The policy's last layer starts with gain 0.01 (a near-uniform first policy) and the
    value's with gain 1, as in the PPO implementations CleanRL reproduces.
    """

    def __init__(self, obs_dim: int, n_actions: int, hidden: int = 64, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(int(seed))
        g = math.sqrt(2.0)
        self.actor = nn.Sequential(_layer(obs_dim, hidden, g, gen), nn.Tanh(),
                                   _layer(hidden, hidden, g, gen), nn.Tanh(),
                                   _layer(hidden, n_actions, 0.01, gen))
        self.critic = nn.Sequential(_layer(obs_dim, hidden, g, gen), nn.Tanh(),
                                    _layer(hidden, hidden, g, gen), nn.Tanh(),
                                    _layer(hidden, 1, 1.0, gen))
        self.obs_dim, self.n_actions, self.hidden = obs_dim, n_actions, hidden

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs `(B, obs_dim)` → (logits `(B, A)`, value `(B,)`)."""
        return self.actor(obs), self.critic(obs).squeeze(-1)

    @torch.no_grad()
    def act_greedy(self, obs) -> np.ndarray:
        """argmax_a π(a|s) for a batch of observations `(B, obs_dim)` → `(B,)` actions."""
        return self.actor(torch.as_tensor(obs, dtype=torch.float32)).argmax(-1).numpy()


# --------------------------------------------------------------------------- environments

def make_envs(env_id: str, num_envs: int):
    """A vector env of `num_envs` copies: gymnasium's native vectorised implementation when
    the id has one (CartPole-v1: all N carts stepped by one numpy expression), otherwise a
    SyncVectorEnv. Checks discrete actions, Box observations and NEXT_STEP autoreset."""
    try:
        gym.spec(env_id)
    except gym.error.Error as e:                 # unknown id, bad version, missing module
        raise ValueError(f"env_id={env_id!r} is not a registered gymnasium environment: {e}") from None
    try:
        envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point")
    except gym.error.Error:
        envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync",
                            vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP})
    if not isinstance(envs.single_action_space, gym.spaces.Discrete):
        envs.close()
        raise ValueError(f"env_id={env_id!r} needs Discrete actions, has {envs.single_action_space}")
    if not isinstance(envs.single_observation_space, gym.spaces.Box):
        envs.close()
        raise ValueError(f"env_id={env_id!r} needs Box observations, has {envs.single_observation_space}")
    mode = envs.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
    if mode != gym.vector.AutoresetMode.NEXT_STEP:
        envs.close()
        raise ValueError(f"env_id={env_id!r}: expected NEXT_STEP autoreset, got {mode}")
    return envs


def evaluate_greedy(policy, env_id: str = "CartPole-v1", n_episodes: int = 20, seed: int = 0,
             envs=None) -> float:
    """Mean undiscounted return of `n_episodes` episodes of a greedy policy.

    `policy` is an `ActorCritic` (argmax of its logits) or any callable mapping observations
    `(n_episodes, obs_dim)` to actions `(n_episodes,)`. Runs the episodes in parallel, one
    per vector-env slot, each until its first episode ends. Pass `envs` (with
    `n_episodes` slots) to reuse environments.
    """
    act = policy.act_greedy if isinstance(policy, ActorCritic) else policy
    own = envs is None
    envs = make_envs(env_id, n_episodes) if own else envs
    if envs.num_envs != n_episodes:
        raise ValueError(f"envs has {envs.num_envs} slots, n_episodes={n_episodes}")
    obs, _ = envs.reset(seed=int(seed))
    returns = np.zeros(n_episodes)
    running = np.ones(n_episodes, dtype=bool)
    while running.any():
        action = np.asarray(act(obs), dtype=np.int64)
        obs, reward, term, trunc, _ = envs.step(action)
        returns += np.where(running, reward, 0.0)
        running &= ~(term | trunc)
    if own:
        envs.close()
    return float(returns.mean())


def record_video(policy, env_id: str = "CartPole-v1", path="cartpole.gif", seed: int = 0,
                 max_steps: int = 200, every: int = 2, width: int = 300) -> dict:
    """Play one greedy episode of `policy` and write it to `path` as an animated GIF.

    `policy` is an `ActorCritic` (argmax of its logits) or a callable mapping observations
    `(1, obs_dim)` to actions `(1,)`. The episode starts from `env.reset(seed=seed)` and
    lasts until it ends or `max_steps` steps; every `every`-th frame of gymnasium's
    `render_mode="rgb_array"` is kept, scaled to `width` pixels and played at the env's
    speed (the last frame is held for a second). CartPole's renderer needs `pygame`.
    200 steps of CartPole at every=2, width=300 make about 100 frames and 100-200 kB.
    Only GIF (Pillow, which matplotlib brings): MP4 would need ffmpeg.

    Returns {"path", "frames", "steps", "return", "bytes"}.
    """
    import os

    from PIL import Image

    if str(path).lower().rsplit(".", 1)[-1] != "gif":
        raise ValueError(f"path must end in .gif (GIF is the only format written), got {str(path)!r}")
    for name, value in (("max_steps", max_steps), ("every", every), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")     # no banner in the notebook
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")             # no display needed
    act = policy.act_greedy if isinstance(policy, ActorCritic) else policy
    try:
        env = gym.make(env_id, render_mode="rgb_array")
    except gym.error.Error as e:
        raise ValueError(f"env_id={env_id!r} cannot be rendered: {e}") from None

    def frame() -> Image.Image:
        rgb = Image.fromarray(env.render())
        height = max(1, round(rgb.height * width / rgb.width))
        return rgb.resize((width, height), Image.Resampling.BILINEAR).quantize(64)

    try:
        obs, _ = env.reset(seed=int(seed))
        try:
            frames, total, steps = [frame()], 0.0, 0
        except gym.error.DependencyNotInstalled as e:
            raise ValueError(f"env_id={env_id!r} cannot be rendered here: {e}") from None
        while steps < max_steps:
            action = int(np.asarray(act(np.asarray(obs, dtype=np.float32)[None])).reshape(-1)[0])
            obs, reward, term, trunc, _ = env.step(action)
            total, steps = total + float(reward), steps + 1
            if steps % every == 0 or term or trunc or steps == max_steps:
                frames.append(frame())
            if term or trunc:
                break
        fps = float(env.metadata.get("render_fps") or 50)
    finally:
        env.close()
    step_ms = max(20, round(1000 * every / fps))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], loop=0, optimize=True,
                   duration=[step_ms] * (len(frames) - 1) + [1000])
    return {"path": path, "frames": len(frames), "steps": steps, "return": total,
            "bytes": path.stat().st_size}


# --------------------------------------------------------------------------- rollouts

@dataclass
class EnvState:
    """What carries over from one rollout to the next, per environment `(N,)`."""

    obs: torch.Tensor               # (N, obs_dim) observation the policy acts on next
    prev_done: np.ndarray           # (N,) True: the last step ended an episode, so the next
                                    #      step is gymnasium's autoreset step (not a transition)
    ep_return: np.ndarray           # (N,) return of the running episode so far
    episodes: int = 0               # episodes finished since the start

    @classmethod
    def start(cls, envs, seed: int) -> "EnvState":
        obs, _ = envs.reset(seed=int(seed))
        N = envs.num_envs
        return cls(torch.as_tensor(obs, dtype=torch.float32).reshape(N, -1),
                   np.zeros(N, dtype=bool), np.zeros(N))


@dataclass
class Rollout:
    """T steps of N environments, time-major. `valid[t, n]` is False on autoreset steps,
    whose "observation" is the final state of the previous episode: those entries are in
    the arrays (shapes stay `(T, N)`) but never in a loss."""

    obs: torch.Tensor               # (T, N, obs_dim) s_t
    actions: torch.Tensor           # (T, N) a_t
    logp: torch.Tensor              # (T, N) log π_old(a_t|s_t)
    values: torch.Tensor            # (T, N) V(s_t) at sampling time
    rewards: torch.Tensor           # (T, N) r_t
    terminated: torch.Tensor        # (T, N) bool, the episode ended at t (no bootstrap)
    truncated: torch.Tensor         # (T, N) bool, a time limit cut it at t (bootstrap)
    valid: torch.Tensor             # (T, N) bool, a real transition s_t → s_{t+1}
    last_value: torch.Tensor        # (N,) V(s_T), the observation after the last step
    ref_logits: torch.Tensor | None  # (T, N, A) logits of the KL reference, if any
    episode_returns: list           # returns of the episodes that ended in this rollout


@torch.no_grad()
def collect_rollout(model: ActorCritic, envs, state: EnvState, T: int, gen: torch.Generator,
                    ref_policy: ActorCritic | None = None) -> Rollout:
    """Run π_θ (sampling) for T steps in every environment of `envs`; update `state`.

    With NEXT_STEP autoreset the step after an episode end returns the new episode's first
    observation and reward 0 and ignores the action: it is stored with `valid=False`.
    `ref_policy` (the frozen reference, or the model itself for the KL to π_old) makes the
    rollout store its logits for the KL penalty.
    """
    N, A = envs.num_envs, int(envs.single_action_space.n)
    obs_dim = state.obs.shape[1]
    obs = torch.zeros((T, N, obs_dim))
    actions = torch.zeros((T, N), dtype=torch.long)
    logp = torch.zeros((T, N))
    values = torch.zeros((T, N))
    rewards = np.zeros((T, N), dtype=np.float32)
    term = np.zeros((T, N), dtype=bool)
    trunc = np.zeros((T, N), dtype=bool)
    valid = np.zeros((T, N), dtype=bool)
    ref_logits = torch.zeros((T, N, A)) if ref_policy is not None else None
    finished = []
    for t in range(T):
        obs[t] = state.obs
        valid[t] = ~state.prev_done
        logits, value = model(state.obs)                                   # (N, A), (N,)
        if not bool(torch.isfinite(logits).all()):
            raise NonFiniteError("the policy's logits are non-finite")
        logp_all = torch.log_softmax(logits, -1)
        u = torch.rand(N, 1, generator=gen)                                # inverse-CDF sampling
        a = (logp_all.exp().cumsum(-1) < u).sum(-1).clamp_(max=A - 1)     # a_t ~ π_θ(·|s_t)
        actions[t], values[t] = a, value
        logp[t] = logp_all.gather(1, a[:, None]).squeeze(1)
        if ref_logits is not None:
            ref_logits[t] = logits if ref_policy is model else ref_policy.actor(state.obs)
        o, r, te, tr, _ = envs.step(a.numpy())
        rewards[t], term[t], trunc[t] = r, te, tr
        state.ep_return += r                   # autoreset steps add their reward of 0
        done = te | tr
        if done.any():
            finished.extend(state.ep_return[done].tolist())
            state.ep_return[done] = 0.0
            state.episodes += int(done.sum())
        state.prev_done = done
        state.obs = torch.as_tensor(o, dtype=torch.float32).reshape(N, obs_dim)
    last_value = model.critic(state.obs).squeeze(-1)                      # V(s_T), (N,)
    return Rollout(obs, actions, logp, values, torch.from_numpy(rewards), torch.from_numpy(term),
                   torch.from_numpy(trunc), torch.from_numpy(valid), last_value, ref_logits,
                   finished)


def rollout_advantages(ro: Rollout, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE on a rollout, respecting episode boundaries; returns (Â, R), both `(T, N)`.

    V_next(t) = 0 if terminated at t; V(final observation) if truncated at t, which under
    NEXT_STEP autoreset is the observation stored at t+1 (or `last_value` at t = T−1);
    the recursion stops at every end. Autoreset steps (invalid) are treated as terminal
    so that their (unused) entries stay finite and bounded.
    """
    next_values = torch.cat([ro.values[1:], ro.last_value[None]], 0)     # V(s_{t+1}), (T, N)
    dones = (ro.terminated | ~ro.valid).float()
    truncated = (ro.truncated & ~ro.terminated).float()
    return gae(ro.rewards, ro.values, dones, ro.last_value, gamma, lam,
               truncated=truncated, final_values=next_values)
