"""Run management shared by the trainers (ppo_core.trainers.run and .config): stop requests
end a run between iterations, an interrupt mid-iteration never saves a partial update,
output paths are checked before training, configs check their types, CLI exit codes."""

from __future__ import annotations

import copy
import json
import os
import signal

import pytest
import torch

from ppo_core.lm.reward import gold_score
from ppo_core.trainers import cartpole, rlhf
from ppo_core.trainers.cartpole import CartPoleConfig
from ppo_core.trainers.config import run_cli
from ppo_core.trainers.rlhf import RLHFConfig
from ppo_core.trainers.run import Run, check_output_paths

SMALL = dict(batch_size=4, minibatch_size=4, response_len=6, update_epochs=1, progress=False,
             device="cpu")


def _rlhf(tiny, prompts, cfg, **kw):
    model, tok = tiny
    return rlhf.train(cfg, policy=copy.deepcopy(model), tokenizer=tok, reward_fn=gold_score,
                      gold_fn=gold_score, prompts=prompts, **kw)


def test_a_stop_request_finishes_the_iteration_and_checkpoints_it(tiny, prompts, tmp_path):
    """SIGTERM during iteration 2 (here: from its callback) lets iteration 2 finish; the run
    ends there, its checkpoint equals a clean 2-iteration run's, the result says which signal."""
    def term_at_two(record):
        if record["iteration"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    cfg = RLHFConfig(steps=4, save_dir=str(tmp_path / "a"), seed=5, **SMALL)
    res = _rlhf(tiny, prompts, cfg, callback=term_at_two)
    assert res.interrupted and res.stop_signal == signal.SIGTERM and len(res.records) == 2
    clean = _rlhf(tiny, prompts, cfg.replace(steps=2, save_dir=str(tmp_path / "b")))
    for p, q in zip(res.policy.parameters(), clean.policy.parameters()):
        assert torch.equal(p, q)
    meta = json.loads((tmp_path / "a" / "rlhf_config.json").read_text())
    assert meta["state"]["iteration"] == 2 and meta["state"]["interrupted"] is True
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL     # handler restored


def test_an_interrupt_mid_iteration_keeps_the_last_finished_checkpoint(tiny, prompts, tmp_path,
                                                                        capsys):
    calls = {"n": 0}

    def reward_then_interrupt(texts):
        calls["n"] += 1
        if calls["n"] == 3:                      # iteration 3, after 2 finished and were saved
            raise KeyboardInterrupt
        return gold_score(texts)

    cfg = RLHFConfig(steps=5, save_dir=str(tmp_path / "ck"), save_every=1,
                     log_path=str(tmp_path / "log.jsonl"), **SMALL)
    model, tok = tiny
    res = rlhf.train(cfg, policy=copy.deepcopy(model), tokenizer=tok, reward_fn=reward_then_interrupt,
                     gold_fn=gold_score, prompts=prompts)
    assert res.interrupted and len(res.records) == 2
    meta = json.loads((tmp_path / "ck" / "rlhf_config.json").read_text())
    assert meta["state"]["iteration"] == 2 and meta["state"]["interrupted"] is False
    assert "partial update was not saved" in capsys.readouterr().err


def test_log_inside_the_save_folder_and_foreign_files_are_refused(tmp_path):
    save = tmp_path / "run"
    with pytest.raises(ValueError, match="inside the save folder"):
        check_output_paths(save / "logs" / "x.jsonl", save)
    save.mkdir()
    (save / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="notes.txt"):
        check_output_paths(None, save, overwrite=True,
                           checkpoint_files=rlhf.checkpoint_files)
    assert (save / "notes.txt").read_text() == "mine"


def test_rlhf_resume_continues_from_the_checkpoint(tiny, prompts, tmp_path):
    """Two iterations, then two more with resume: the log has four records, numbered on,
    and the reference is rebuilt from the run's model name."""
    cfg = RLHFConfig(steps=2, model="tiny", save_dir=str(tmp_path / "ck"),
                     log_path=str(tmp_path / "log.jsonl"), reward_bias=None, **SMALL)
    rlhf.train(cfg, reward_fn=gold_score, gold_fn=gold_score, prompts=prompts)
    res = rlhf.train(cfg.replace(steps=4, resume=True), reward_fn=gold_score,
                     gold_fn=gold_score, prompts=prompts)
    assert [r["iteration"] for r in res.records] == [1, 2, 3, 4]
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 4
    with pytest.raises(ValueError, match="do not pass a policy"):
        _rlhf(tiny, prompts, cfg.replace(steps=5, resume=True))


def test_resuming_a_run_started_from_a_policy_object_asks_for_its_reference(tiny, prompts,
                                                                             tmp_path):
    cfg = RLHFConfig(steps=1, save_dir=str(tmp_path / "ck"), **SMALL)
    _rlhf(tiny, prompts, cfg)
    with pytest.raises(ValueError, match="ref_model"):
        rlhf.train(cfg.replace(steps=2, resume=True), reward_fn=gold_score, gold_fn=gold_score,
                   prompts=prompts)


def test_configs_check_their_types_and_ranges():
    for bad in (dict(progress="no"), dict(seed=-1), dict(kl_horizon=0), dict(seed=1.5),
                dict(num_envs=True)):
        with pytest.raises(ValueError):
            CartPoleConfig(**bad)
    for bad in (dict(seed="x"), dict(min_response_len=True), dict(clip_eps=None)):
        with pytest.raises(ValueError):
            RLHFConfig(**bad)


def test_cli_exit_codes(tmp_path, capsys):
    assert cartpole.cli_main(["--seed", "-1"]) == 2
    assert cartpole.cli_main(["--log", "/proc/no/such/dir/x.jsonl", "--total-steps", "512"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 2

    class Stopped:
        interrupted, stop_signal = True, signal.SIGTERM

    assert run_cli(CartPoleConfig, cartpole.cli_parser(), [], lambda cfg: Stopped(),
                   lambda r, c: None) == 143


def test_run_outside_the_main_thread_still_logs(tmp_path):
    import threading

    out = {}

    def body():
        with Run(tmp_path / "t.jsonl", total=2) as run:
            for it in run.iterations(0, 2):
                run.log_record({"iteration": it, "x": 1.0})
        out["n"] = len(run.records)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert out["n"] == 2
