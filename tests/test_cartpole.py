"""PPO on CartPole (ppo_core.trainers.cartpole, ppo_core.trainers.checkpoint, the cartpole lab).

Reference behaviour: the trainer learns (3 seeds reach the target), is deterministic,
checkpoints round-trip exactly, resumes, stops on divergence, and never lets a transition
cross an episode boundary under gymnasium's NEXT_STEP autoreset.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppo_core.advantages import gae
from ppo_core.trainers.cartpole import (ActorCritic, CartPoleConfig, EnvState, TrainingDiverged, cli_main,
                               collect_rollout, evaluate_greedy, load_agent, make_envs,
                               rollout_advantages, train)
from ppo_core.metrics import read_log

ROOT = Path(__file__).resolve().parent.parent
SHORT = dict(total_steps=2048, num_envs=16, num_steps=16, update_epochs=2, eval_every=1024,
             eval_episodes=4)


def _comparable(records):
    """Records without the wall-clock keys, which differ between identical runs."""
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in records]


# ---------------------------------------------------------------- a toy env with known episodes

class _Episodes(gym.Env):
    """obs = [episode id, step in episode]; reward = episode id + 1 (to spot leaks).
    Odd episodes terminate after 3 steps; even ones run into a TimeLimit of 5."""

    observation_space = gym.spaces.Box(-1e6, 1e6, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self):
        self.episode, self.t = -1, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode += 1
        self.t = 0
        return np.array([self.episode, 0], np.float32), {}

    def step(self, action):
        self.t += 1
        terminated = self.episode % 2 == 1 and self.t == 3
        return (np.array([self.episode, self.t], np.float32), float(self.episode + 1),
                terminated, False, {})


gym.register("PPOCourseEpisodes-v0", entry_point=_Episodes, max_episode_steps=5)


def test_autoreset_no_transition_crosses_an_episode_boundary():
    envs = make_envs("PPOCourseEpisodes-v0", 3)
    model = ActorCritic(2, 2, 8, seed=0)
    state = EnvState.start(envs, seed=0)
    ro = collect_rollout(model, envs, state, 20, torch.Generator().manual_seed(0))
    envs.close()
    T = 20
    next_obs = torch.cat([ro.obs[1:], state.obs[None]], 0)                      # s_{t+1}
    for t in range(T):
        for n in range(3):
            same_episode = bool(next_obs[t, n, 0] == ro.obs[t, n, 0])
            if ro.valid[t, n]:
                # a real transition stays in its episode: s_{t+1} is its successor
                assert same_episode and next_obs[t, n, 1] == ro.obs[t, n, 1] + 1
                assert ro.rewards[t, n] == ro.obs[t, n, 0] + 1
            else:
                # autoreset step: its s_t is the previous episode's final state, reward 0
                assert not same_episode and ro.rewards[t, n] == 0
                assert t > 0 and (ro.terminated[t - 1, n] or ro.truncated[t - 1, n])
    ends_t = ro.terminated | ro.truncated
    assert ro.terminated.any() and ro.truncated.any()
    # terminated episodes are the odd ones after 3 steps; truncated the even ones after 5
    assert torch.all(ro.obs[ro.terminated][:, 1] == 2) and torch.all(ro.obs[ro.truncated][:, 1] == 4)
    # every end is followed by an invalid autoreset step (when inside the rollout)
    assert torch.equal(~ro.valid[1:], ends_t[:-1])

    # returns with λ = 1 and V ≡ c: episode rewards never leak in from the next episode
    c = 0.5
    ro.values.fill_(c)
    ro.last_value.fill_(c)
    gamma = 0.9
    adv, ret = rollout_advantages(ro, gamma, 1.0)
    for n in range(3):
        for t in range(T):
            if not ro.valid[t, n]:
                continue
            g, k, disc = 0.0, t, 1.0
            while True:                         # walk forward inside the episode
                g += disc * float(ro.rewards[k, n])
                if ro.terminated[k, n]:
                    break
                if ro.truncated[k, n] or k == T - 1:
                    g += disc * gamma * c        # bootstrap V(final obs) or V(s_T)
                    break
                disc *= gamma
                k += 1
            assert ret[t, n] == pytest.approx(g, rel=1e-5), (t, n)


def test_truncation_bootstraps_from_the_final_observation_value():
    # one env, episode truncated at t=1; step 2 is the autoreset step
    ro_values = torch.tensor([[1.0], [2.0], [7.0]])      # V(s_2) = V(final obs) = 7
    rewards = torch.tensor([[1.0], [1.0], [0.0]])
    truncated = torch.tensor([[0.0], [1.0], [0.0]])
    next_values = torch.tensor([[2.0], [7.0], [3.0]])
    adv, _ = gae(rewards, ro_values, torch.tensor([[0.0], [0.0], [1.0]]), torch.tensor([3.0]),
                 0.9, 1.0, truncated=truncated, final_values=next_values)
    assert adv[1, 0] == pytest.approx(1.0 + 0.9 * 7.0 - 2.0)       # bootstrapped, not 0
    assert adv[0, 0] == pytest.approx(1.0 + 0.9 * 2.0 - 1.0 + 0.9 * float(adv[1, 0]))


# ---------------------------------------------------------------- learning

@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_learns_cartpole_within_100k_steps(seed):
    result = train(CartPoleConfig(seed=seed, target_return=475, total_steps=100_000))
    evals = [r["eval/return"] for r in result.records if "eval/return" in r]
    assert result.solved_step is not None and result.solved_step <= 100_000, evals
    assert evals[-1] >= 475 and evals[0] < 475          # it learned; it was not born solved


def test_same_seed_gives_identical_log(tmp_path):
    a = train(CartPoleConfig(seed=3, log_path=str(tmp_path / "a.jsonl"), **SHORT))
    train(CartPoleConfig(seed=3, log_path=str(tmp_path / "b.jsonl"), **SHORT))
    c = train(CartPoleConfig(seed=4, **SHORT))
    assert _comparable(read_log(tmp_path / "a.jsonl")) == _comparable(read_log(tmp_path / "b.jsonl"))
    assert _comparable(a.records) != _comparable(c.records)
    keys = set(a.records[-1])
    for k in ("global_step", "charts/episodic_return", "losses/policy_loss", "losses/value_loss",
              "losses/entropy", "losses/approx_kl", "losses/clipfrac", "losses/explained_variance",
              "objective/kl", "objective/beta", "perf/steps_per_second", "perf/train_seconds",
              "eval/return"):
        assert k in keys, k


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    result = train(CartPoleConfig(seed=0, save_dir=str(tmp_path / "ck"), **SHORT))
    model, cfg = load_agent(tmp_path / "ck")
    assert (tmp_path / "ck" / "weights.safetensors").exists()
    assert json.loads((tmp_path / "ck" / "checkpoint.json").read_text())["config"]["seed"] == 0
    obs = torch.randn(64, 4)
    with torch.no_grad():
        la, va = result.model(obs)
        lb, vb = model(obs)
    assert torch.equal(la, lb) and torch.equal(va, vb)
    assert cfg.num_envs == SHORT["num_envs"]
    assert evaluate_greedy(model, n_episodes=4, seed=1) == evaluate_greedy(result.model, n_episodes=4, seed=1)


def test_resume_continues_the_log(tmp_path):
    log, ck = str(tmp_path / "run.jsonl"), str(tmp_path / "ck")
    first = train(CartPoleConfig(seed=0, log_path=log, save_dir=ck, save_every=2, **SHORT))
    n1 = len(first.records)
    cfg = dict(SHORT, total_steps=2 * SHORT["total_steps"])
    train(CartPoleConfig(seed=0, log_path=log, save_dir=ck, resume=True, **cfg))
    records = read_log(log)
    assert len(records) == 2 * n1
    assert [r["iteration"] for r in records] == list(range(1, 2 * n1 + 1))
    steps = [r["global_step"] for r in records]
    assert steps == sorted(steps) and steps[-1] == cfg["total_steps"]
    secs = [r["perf/train_seconds"] for r in records]
    assert secs == sorted(secs)                          # the clock continues too
    # the resumed run started from the checkpoint's weights, not from a fresh network
    fresh = first             # the same seed and settings: what a start from scratch gives
    assert records[n1]["losses/value_loss"] != fresh.records[0]["losses/value_loss"]


def test_non_finite_training_stops_and_names_the_iteration(tmp_path):
    # lr=10 merely collapses this policy (Adam's step is bounded by lr, tanh saturates);
    # a learning rate this absurd makes the value loss overflow float32 within a few updates
    log = tmp_path / "nan.jsonl"
    with pytest.raises(TrainingDiverged, match=r"iteration \d+"):
        train(CartPoleConfig(lr=1e30, anneal_lr=False, log_path=str(log),
                             **dict(SHORT, total_steps=8192)))
    for rec in read_log(log):                          # nothing non-finite was logged
        assert all(np.isfinite(v) for v in rec.values() if isinstance(v, float))


class _NaNReward(_Episodes):
    def step(self, action):
        obs, r, te, tr, info = super().step(action)
        return obs, (float("nan") if self.episode >= 6 else r), te, tr, info


gym.register("PPOCourseNaNReward-v0", entry_point=_NaNReward, max_episode_steps=5)


def test_nan_reward_stops_with_the_iteration_named():
    with pytest.raises(TrainingDiverged, match=r"iteration 2 .*non-finite"):
        train(CartPoleConfig(env_id="PPOCourseNaNReward-v0", num_envs=1, num_steps=16,
                             total_steps=160, eval_every=0))


def test_keyboard_interrupt_keeps_log_and_checkpoint(tmp_path, monkeypatch):
    import ppo_core.trainers.cartpole as cp
    calls = {"n": 0}
    real = cp.collect_rollout

    def interrupt_on_fifth(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(cp, "collect_rollout", interrupt_on_fifth)
    log, ck = tmp_path / "i.jsonl", tmp_path / "ck"
    result = train(CartPoleConfig(seed=0, log_path=str(log), save_dir=str(ck), save_every=2,
                                  **SHORT))
    assert result.interrupted and len(result.records) == 4
    assert len(read_log(log)) == 4
    meta = json.loads((ck / "checkpoint.json").read_text())
    assert meta["state"]["iteration"] == 4
    load_agent(ck)


def test_resume_after_an_interrupt_does_not_duplicate_iterations(tmp_path, monkeypatch):
    # interrupted in iteration 6 with save_every=4: the log holds 5 iterations, the
    # checkpoint 4; the resumed run redoes iteration 5 and the log has each iteration once
    import ppo_core.trainers.cartpole as cp
    calls = {"n": 0}
    real = cp.collect_rollout

    def interrupt_on_sixth(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real(*args, **kw)

    log, ck = tmp_path / "i.jsonl", tmp_path / "ck"
    monkeypatch.setattr(cp, "collect_rollout", interrupt_on_sixth)
    first = train(CartPoleConfig(seed=0, log_path=str(log), save_dir=str(ck), save_every=4, **SHORT))
    assert first.interrupted and len(read_log(log)) == 5
    with open(log, "a") as fh:
        fh.write('{"iteration": 6, "global_st')          # and a half-written last line
    monkeypatch.setattr(cp, "collect_rollout", real)
    train(CartPoleConfig(seed=0, log_path=str(log), save_dir=str(ck), save_every=4, resume=True,
                         **SHORT))
    iters = [r["iteration"] for r in read_log(log)]
    assert iters == list(range(1, SHORT["total_steps"] // 256 + 1))


def test_kl_penalty_modes_run_and_log_beta():
    rollout = train(CartPoleConfig(seed=0, beta=0.5, kl_reference="rollout", **SHORT))
    initial = train(CartPoleConfig(seed=0, beta=0.5, kl_reference="initial", **SHORT))
    adaptive = train(CartPoleConfig(seed=0, beta=0.5, kl_target=1e-4, kl_horizon=1000, **SHORT))
    # KL to π_old is 0 at the first minibatch of each update; KL to the initial policy grows
    assert initial.records[-1]["objective/kl"] > rollout.records[-1]["objective/kl"] >= 0
    assert all(r["objective/beta"] == 0.5 for r in rollout.records)
    betas = [r["objective/beta"] for r in adaptive.records]
    assert betas[-1] != betas[0]                      # the controller moved β


def test_learning_rate_anneals_linearly_to_zero():
    cfg = dict(SHORT, eval_every=0)                      # 2048 / 256 = 8 iterations
    recs = train(CartPoleConfig(lr=1e-3, anneal_lr=True, **cfg)).records
    n = len(recs)
    assert n == 8
    lrs = [r["charts/learning_rate"] for r in recs]
    assert lrs == pytest.approx([1e-3 * (1 - i / n) for i in range(n)])   # starts at lr, ends at lr/n
    flat = train(CartPoleConfig(lr=1e-3, anneal_lr=False, **cfg)).records
    assert all(r["charts/learning_rate"] == 1e-3 for r in flat)


def test_target_kl_stops_the_epochs_early():
    cfg = dict(SHORT, update_epochs=8, eval_every=0, lr=1e-2)
    free = train(CartPoleConfig(target_kl=None, **cfg)).records
    early = train(CartPoleConfig(target_kl=1e-6, **cfg)).records
    assert all(r["losses/epochs"] == 8 for r in free)
    # the first epoch's KL is measured before any step (0); the second one's exceeds 1e-6
    assert all(r["losses/epochs"] == 2 for r in early)


def test_max_train_seconds_stops_early():
    result = train(CartPoleConfig(max_train_seconds=1e-9, **SHORT))
    assert len(result.records) == 1                  # one iteration, then the clock says stop


def test_bad_config_raises_value_error_naming_the_field():
    with pytest.raises(ValueError, match="num_envs"):
        train(CartPoleConfig(num_envs=0))
    with pytest.raises(ValueError, match="clip_eps"):
        train(CartPoleConfig(clip_eps=-0.1))
    with pytest.raises(ValueError, match="env_id"):
        make_envs("Pendulum-v1", 2)                    # continuous actions


def test_works_on_a_sync_vector_env():
    result = train(CartPoleConfig(env_id="Acrobot-v1", total_steps=512, num_envs=4,
                                  num_steps=64, update_epochs=1, eval_every=0))
    assert len(result.records) == 2


# ---------------------------------------------------------------- command line

def test_cli_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--env-id", "--seed", "--clip-eps", "--beta", "--lr", "--total-steps",
                 "--target-return", "--log", "--save", "--resume", "--epochs", "--kl-reference"):
        assert flag in out, flag


def test_cli_short_run(tmp_path):
    log, ck, video = tmp_path / "x.jsonl", tmp_path / "ck", tmp_path / "agent.gif"
    proc = subprocess.run(
        [sys.executable, "-m", "ppo_core", "cartpole", "--seed", "0", "--clip-eps", "none",
         "--beta", "0.0", "--lr", "0.003", "--total-steps", "1024", "--num-envs", "16",
         "--num-steps", "16", "--eval-every", "512", "--eval-episodes", "2",
         "--log", str(log), "--save", str(ck), "--video", str(video),
         "--tensorboard", str(tmp_path / "tb")],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(read_log(log)) == 4 and (ck / "weights.safetensors").exists()
    assert "steps" in proc.stdout and f"video: {video}" in proc.stdout
    assert video.stat().st_size > 0 and list((tmp_path / "tb").glob("events.out.tfevents.*"))
    # an existing video is refused before any training, unless --overwrite
    again = [str(a) for a in ("--total-steps", 256, "--eval-every", 0, "--video", video)]
    assert cli_main(again) == 2
    assert cli_main(again + ["--overwrite"]) == 0


def _balance(obs):
    """A hand-written CartPole controller: push towards where the pole is falling."""
    return (obs[:, 2] + 0.5 * obs[:, 3] > 0).astype(np.int64)


def test_record_video_writes_a_small_gif(tmp_path):
    from PIL import Image

    from ppo_core.trainers.rollout import record_video

    info = record_video(_balance, "CartPole-v1", tmp_path / "v.gif", seed=0, max_steps=40)
    assert (info["steps"], info["return"], info["frames"]) == (40, 40.0, 21)   # frame 0, 2, ..., 40
    assert info["bytes"] == (tmp_path / "v.gif").stat().st_size < 100_000
    with Image.open(tmp_path / "v.gif") as gif:
        assert gif.size == (300, 200) and gif.info.get("loop") == 0
        durations = []
        for i in range(gif.n_frames):                 # Pillow merges identical frames
            gif.seek(i)
            durations.append(gif.info["duration"])
    assert 1 < len(durations) <= 21 and sum(durations) == 20 * 40 + 1000    # 50 fps, every 2nd
    fell = record_video(ActorCritic(4, 2, seed=0), path=tmp_path / "u.gif", max_steps=200)
    assert fell["steps"] < 200 and fell["frames"] == fell["steps"] // 2 + 1 + fell["steps"] % 2
    with pytest.raises(ValueError, match="gif"):
        record_video(_balance, path=tmp_path / "v.mp4")



def test_cli_bad_flag_value_exits_2_naming_the_field(capsys):
    assert cli_main(["--num-envs", "0"]) == 2
    assert "num_envs" in capsys.readouterr().err


# ---------------------------------------------------------------- the lab, driven headlessly

def test_cartpole_lab_runs_and_overlays():
    import matplotlib
    matplotlib.use("Agg")
    from ppo_core.course.widgets import cartpole_lab

    lab = cartpole_lab(display=False)
    n_lines = len(lab.ax.lines)
    lab.eps.value = "off"
    lab.epochs.value = 5
    lab.run()
    assert len(lab.ax.lines) > n_lines
    first = lab.last_records
    lab.eps.value = 0.2
    lab.run()
    assert len(lab.runs) == 2 and lab.last_records is not first
    assert all("eval/return" in r or "charts/episodic_return" in r for r in lab.last_records)
    assert "ε=off" in lab.runs[0]["label"] and "ε=0.2" in lab.runs[1]["label"]
    lab.clear()
    assert not lab.runs


# ---------------------------------------------------------------- what reaches the loss (issue 13)

BUGCHECK = dict(total_steps=512, num_envs=4, num_steps=64, update_epochs=1, num_minibatches=1,
                eval_every=0)


def _spy(monkeypatch, adv_of=None):
    """Record, per update, the rollout's valid mask, its advantages and the arguments each
    `ppo_objective` call gets. `adv_of(adv)` replaces the advantages GAE computed."""
    from ppo_core.trainers import cartpole

    seen = {"valid": [], "adv": [], "calls": []}
    real_collect, real_adv, real_obj = (cartpole.collect_rollout, cartpole.rollout_advantages,
                                        cartpole.ppo_objective)

    def collect(*a, **k):
        ro = real_collect(*a, **k)
        seen["valid"].append(ro.valid.clone())
        return ro

    def advantages(*a, **k):
        adv, ret = real_adv(*a, **k)
        if adv_of is not None:
            adv = adv_of(adv)
        seen["adv"].append(adv.clone())
        return adv, ret

    def objective(logp, old_logp, adv, *a, **k):
        seen["calls"].append({"logp": logp.detach().clone(), "adv": adv.detach().clone()})
        return real_obj(logp, old_logp, adv, *a, **k)
    monkeypatch.setattr(cartpole, "collect_rollout", collect)
    monkeypatch.setattr(cartpole, "rollout_advantages", advantages)
    monkeypatch.setattr(cartpole, "ppo_objective", objective)
    return seen


def test_autoreset_rows_never_reach_the_loss(monkeypatch):
    """Under NEXT_STEP autoreset the step after an episode ends is a reset, not a transition
    (`ro.valid` is False there): the loss sees exactly the valid transitions."""
    seen = _spy(monkeypatch)
    train(CartPoleConfig(**BUGCHECK))
    assert len(seen["calls"]) == len(seen["valid"]) == 2
    for valid, call in zip(seen["valid"], seen["calls"]):
        assert int((~valid).sum()) > 0, "no episode ended: the test would prove nothing"
        assert call["logp"].shape == (int(valid.sum()),)


@pytest.mark.parametrize("norm_adv", [True, False])
def test_norm_adv_whitens_the_advantages_or_leaves_them(monkeypatch, norm_adv):
    """Advantages replaced by ones of known mean 5: with norm_adv the loss gets them whitened
    over the valid transitions (mean 0, std 1), without it exactly as they were."""
    g = torch.Generator().manual_seed(0)
    seen = _spy(monkeypatch, adv_of=lambda adv: 5.0 + 0.5 * torch.randn(adv.shape, generator=g))
    train(CartPoleConfig(norm_adv=norm_adv, **BUGCHECK))
    for valid, adv, call in zip(seen["valid"], seen["adv"], seen["calls"]):
        raw, got = adv[valid], call["adv"]
        if norm_adv:
            assert abs(float(got.mean())) < 1e-5 and abs(float(got.std()) - 1) < 1e-3
            torch.testing.assert_close(got, (raw - raw.mean()) / raw.std(), atol=1e-4, rtol=1e-4)
        else:
            assert torch.equal(got, raw) and abs(float(got.mean()) - 5.0) < 0.2


@pytest.mark.parametrize("max_grad_norm", [1e-3, 0.0])
def test_max_grad_norm_bounds_every_step_the_optimizer_takes(max_grad_norm):
    """The gradient each optimizer step applies has a global norm ≤ max_grad_norm (0 = off:
    then it is larger, so the bound is not met by accident)."""
    norms = []

    def hook(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]
                 if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    handle = register_optimizer_step_pre_hook(hook)
    try:
        train(CartPoleConfig(max_grad_norm=max_grad_norm, **dict(BUGCHECK, update_epochs=2)))
    finally:
        handle.remove()
    assert len(norms) == 4
    if max_grad_norm:
        assert max(norms) <= max_grad_norm * (1 + 1e-4), norms
    else:
        assert min(norms) > 1e-2, norms
