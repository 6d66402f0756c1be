"""TensorBoard scalars: every trainer writes the numbers of its JSONL records under the same
keys, at step `iteration` (`global_step` for CartPole), and the files follow the log's rules
(refused when they exist, replaced with overwrite, purged from the redone step on resume)."""

from __future__ import annotations

import copy

import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from ppo_core.metrics import MetricsLog, scalars  # noqa: E402


def read_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of every scalar in the event files of `folder`."""
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_same_as_records(folder, records, step_key):
    got = read_scalars(folder)
    want: dict[str, list] = {}
    for r in records:
        for key, value in scalars(r, step_key).items():
            want.setdefault(key, []).append((int(r[step_key]), value))
    assert set(got) == set(want), (sorted(set(got) ^ set(want)))
    for key, points in want.items():
        assert [s for s, _ in got[key]] == [s for s, _ in points], key
        assert [v for _, v in got[key]] == pytest.approx([v for _, v in points], rel=1e-6,
                                                         abs=1e-6), key   # stored as float32


def test_bandit_writes_its_records_as_scalars(tmp_path):
    from ppo_core.trainers.bandits import BanditPPOConfig, make_bandit, train_bandit_ppo

    recs = train_bandit_ppo(make_bandit("bernoulli", means=(0.2, 0.5, 0.8)),
                            BanditPPOConfig(updates=6, n_seeds=2), tensorboard_dir=tmp_path / "tb")
    assert_same_as_records(tmp_path / "tb", recs, "iteration")
    tags = read_scalars(tmp_path / "tb")
    assert "losses/approx_kl" in tags and "bandit/probs" not in tags      # lists are left out
    assert [s for s, _ in tags["objective/kl"]] == list(range(6))


def test_cartpole_scalars_are_at_global_step(tmp_path):
    from ppo_core.trainers.cartpole import CartPoleConfig, train

    res = train(CartPoleConfig(total_steps=1024, num_envs=16, num_steps=16, eval_every=512,
                               eval_episodes=2, tensorboard_dir=str(tmp_path / "tb")))
    assert_same_as_records(tmp_path / "tb", res.records, "global_step")
    tags = read_scalars(tmp_path / "tb")
    assert [s for s, _ in tags["losses/clipfrac"]] == [256, 512, 768, 1024]
    assert [s for s, _ in tags["eval/return"]] == [512, 1024]


def test_rlhf_writes_its_records_as_scalars(tiny, prompts, tmp_path):
    from ppo_core.lm.reward import gold_score
    from ppo_core.trainers import rlhf

    model, tok = tiny
    cfg = rlhf.RLHFConfig(steps=2, batch_size=4, minibatch_size=4, response_len=6,
                          update_epochs=1, progress=False, device="cpu",
                          tensorboard_dir=str(tmp_path / "tb"))
    res = rlhf.train(cfg, policy=copy.deepcopy(model), tokenizer=tok, reward_fn=gold_score,
                     gold_fn=gold_score, prompts=prompts)
    assert_same_as_records(tmp_path / "tb", res.records, "iteration")
    tags = read_scalars(tmp_path / "tb")
    assert [s for s, _ in tags["objective/kl"]] == [1, 2] and "samples" not in tags


def test_existing_event_files_are_refused_replaced_or_purged(tmp_path):
    tb = tmp_path / "tb"
    with MetricsLog(None, tensorboard_dir=tb) as log:
        for i in range(1, 5):
            log.write({"iteration": i, "x": float(i)})
    with pytest.raises(ValueError, match="--overwrite"):
        MetricsLog(None, tensorboard_dir=tb)
    # resume keeps iterations 1-2 (the checkpoint's) and redoes 3-4 with new values
    path = tmp_path / "log.jsonl"
    with MetricsLog(path) as log:
        for i in range(1, 5):
            log.write({"iteration": i, "x": float(i)})
    with MetricsLog(path, resume=True, keep=lambda r: r["iteration"] <= 2,
                    tensorboard_dir=tb) as log:
        for i in (3, 4):
            log.write({"iteration": i, "x": 10.0 * i})
    assert read_scalars(tb)["x"] == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]
    with MetricsLog(None, overwrite=True, tensorboard_dir=tb) as log:
        log.write({"iteration": 1, "y": 1.0})
    assert read_scalars(tb) == {"y": [(1, 1.0)]}
    assert len(list(tb.glob("events.out.tfevents.*"))) == 1
