"""Nothing a user owns is ever destroyed (issue 13): saves that leave the old or the new copy
whatever happens, output paths refused before training, one-line errors at the command line.

Failures are injected where they hurt: a KeyboardInterrupt between the two renames of a
swap, a "kill" (an exception nothing may handle) between them, a failing build."""

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from ppo_core.lm import cache
from ppo_core.trainers import cartpole as cp
from ppo_core.trainers import checkpoint as ck
from ppo_core.trainers.run import Run, check_output_paths


# ------------------------------------------------------------------ atomic swaps


def _build(text):
    def build(tmp):
        (tmp / "a.txt").write_text(text)
        (tmp / "b.txt").write_text(text * 2)
    return build


def _content(final):
    assert cache.verify_artifact(final), sorted(p.name for p in final.parent.iterdir())
    a, b = (final / "a.txt").read_text(), (final / "b.txt").read_text()
    assert b == a * 2, "a mix of two saves"
    return a


class _Killed(BaseException):
    """Stands for SIGKILL: raised again by every later rename, so nothing can tidy up."""


def _fail_replace(monkeypatch, at: int, exc):
    """Make the `at`-th call of os.replace in lm.cache raise `exc` (and, for _Killed, every
    later call too)."""
    calls = {"n": 0}
    real = os.replace

    def replace(a, b):
        calls["n"] += 1
        if calls["n"] == at or (exc is _Killed and calls["n"] > at):
            raise exc()
        return real(a, b)
    monkeypatch.setattr(cache.os, "replace", replace)
    return calls


@pytest.mark.parametrize("at", [1, 2])
def test_ctrl_c_during_the_swap_leaves_the_old_or_the_new_copy(tmp_path, monkeypatch, at):
    """os.replace #1 moves the old copy aside, #2 moves the new one in: a Ctrl-C at either
    leaves a complete copy at `final` (the old one), and no stray folders."""
    final = tmp_path / "art"
    cache.atomic_build(final, _build("old"), {})
    _fail_replace(monkeypatch, at, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        cache.atomic_build(final, _build("new"), {})
    monkeypatch.undo()
    assert _content(final) in ("old", "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_a_failing_build_leaves_the_old_copy(tmp_path):
    final = tmp_path / "art"
    cache.atomic_build(final, _build("old"), {})

    def broken(tmp):
        (tmp / "a.txt").write_text("half")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        cache.atomic_build(final, broken, {})
    assert _content(final) == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def _kill_between_the_renames(final, build):
    """Leave the disk as SIGKILL between the two renames would: no `final`, the old copy in
    `.NAME.old-*`, the complete new one in `.NAME.tmp-*`."""
    with pytest.MonkeyPatch.context() as mp:
        _fail_replace(mp, 2, _Killed)
        mp.setattr(cache.shutil, "rmtree", lambda *a, **k: None)
        with pytest.raises(_Killed):
            build()
    assert not final.exists()
    left = sorted(p.name.split("-")[0] for p in final.parent.iterdir() if p.name.startswith("."))
    assert left == [f".{final.name}.old", f".{final.name}.tmp"], left


def test_a_kill_between_the_renames_is_repaired_by_the_next_reader(tmp_path):
    final = tmp_path / "art"
    cache.atomic_build(final, _build("old"), {})
    _kill_between_the_renames(final,
                              lambda: cache.atomic_build(final, _build("new"), {}))
    assert cache.recover_interrupted_swap(final) is True
    assert _content(final) == "new"                        # the complete new build wins
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
    # ... and by the next saver
    _kill_between_the_renames(final,
                              lambda: cache.atomic_build(final, _build("newer"), {}))
    cache.atomic_build(final, _build("newest"), {})
    assert _content(final) == "newest"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_cached_build_restores_instead_of_rebuilding(tmp_path, monkeypatch):
    monkeypatch.setenv("PPO_COURSE_CACHE", str(tmp_path))
    built = []

    def builder(text):
        def b(tmp):
            built.append(text)
            _build(text)(tmp)
            return {}
        return b
    final = cache.cached_build("thing", builder("old"))
    _kill_between_the_renames(final,
                              lambda: cache.cached_build("thing", builder("new"), rebuild=True))
    assert cache.cached_build("thing", builder("never")) == final
    assert _content(final) == "new" and built == ["old", "new"]


def test_an_unfinished_build_is_never_restored(tmp_path):
    final = tmp_path / "art"
    half = tmp_path / ".art.tmp-1-1"
    half.mkdir()
    (half / "a.txt").write_text("half")                  # no manifest: killed mid-build
    assert cache.recover_interrupted_swap(final) is False and not final.exists()
    cache.atomic_build(final, _build("new"), {})          # the next save removes it
    assert _content(final) == "new" and not half.exists()


# ------------------------------------------------------------------ checkpoints


def _save(folder, value: float):
    """A CartPole-style checkpoint whose tensor and JSON state must agree."""
    return ck.save_checkpoint(folder, {"w": torch.full((3,), value)}, {"cfg": 1},
                              {"iteration": int(value)})


def _load(folder) -> int:
    tensors, cfg, state = ck.load_checkpoint(folder)
    assert float(tensors["w"][0]) == state["iteration"], "weights and JSON from two saves"
    return state["iteration"]


@pytest.mark.parametrize("at", [1, 2])
def test_checkpoint_interrupted_mid_swap_loads_old_or_new(tmp_path, monkeypatch, at):
    folder = tmp_path / "ck"
    _save(folder, 1)
    _fail_replace(monkeypatch, at, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        _save(folder, 2)
    monkeypatch.undo()
    assert _load(folder) in (1, 2)


def test_checkpoint_interrupted_while_writing_keeps_the_old_one(tmp_path, monkeypatch):
    folder = tmp_path / "ck"
    _save(folder, 1)
    real = ck.save_file

    def save_then_stop(tensors, path):                   # weights written, JSON not yet
        real(tensors, path)
        raise KeyboardInterrupt
    monkeypatch.setattr(ck, "save_file", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        _save(folder, 2)
    monkeypatch.undo()
    assert _load(folder) == 1


def test_checkpoint_killed_between_the_renames_is_restored_on_load(tmp_path):
    folder = tmp_path / "ck"
    _save(folder, 1)
    _kill_between_the_renames(folder, lambda: _save(folder, 2))
    assert _load(folder) == 2
    # resuming finds it too: check_output_paths repairs the folder first
    _kill_between_the_renames(folder, lambda: _save(folder, 3))
    check_output_paths(save_dir=folder, resume=True, checkpoint_files=cp.checkpoint_files)
    assert _load(folder) == 3


def test_a_damaged_checkpoint_is_refused_not_loaded(tmp_path):
    folder = _save(tmp_path / "ck", 1)
    with open(folder / ck.WEIGHTS, "r+b") as fh:
        fh.truncate(20)
    with pytest.raises(ValueError, match="damaged"):
        ck.load_checkpoint(folder)


def test_saving_never_deletes_a_users_files(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    with pytest.raises(ValueError, match="holds no checkpoint.json"):
        _save(folder, 1)
    _save(tmp_path / "ck", 1)
    (tmp_path / "ck" / "notes.txt").write_text("precious")   # dropped into a checkpoint
    with pytest.raises(ValueError, match="notes.txt"):
        _save(tmp_path / "ck", 2)
    assert (folder / "notes.txt").read_text() == "precious"
    assert (tmp_path / "ck" / "notes.txt").read_text() == "precious" and _load(tmp_path / "ck") == 1


def test_rlhf_save_refuses_a_folder_of_other_files(tmp_path):
    from ppo_core.trainers.rlhf import save_policy

    (tmp_path / "notes.txt").write_text("precious")
    with pytest.raises(ValueError, match="rlhf_config.json"):
        save_policy(None, None, tmp_path)                # refused before anything is written
    assert (tmp_path / "notes.txt").read_text() == "precious"


# ------------------------------------------------------------------ output paths, before training


def _unwritable_folder(tmp_path) -> Path:
    """A folder where no file can be created: a read-only tmp folder, or (as root, whom
    permission bits do not stop) /sys."""
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        return ro
    if Path("/sys").is_dir():
        try:
            Path("/sys/.ppo_probe").touch()
        except OSError:
            return Path("/sys")
    pytest.skip("no unwritable folder on this machine")


def test_metrics_log_is_never_truncated(tmp_path):
    from ppo_core.metrics import MetricsLog, read_log

    log = tmp_path / "run.jsonl"
    with MetricsLog(log) as m:
        m.write({"iteration": 1})
    with pytest.raises(ValueError, match="already holds a run"):
        MetricsLog(log)
    assert read_log(log) == [{"iteration": 1}]
    with MetricsLog(log, resume=True) as m:
        m.write({"iteration": 2})
    assert [r["iteration"] for r in read_log(log)] == [1, 2]
    with MetricsLog(log, overwrite=True) as m:
        m.write({"iteration": 9})
    assert read_log(log) == [{"iteration": 9}]


def test_output_paths_are_checked_before_training(tmp_path):
    log = tmp_path / "run.jsonl"
    log.write_text('{"iteration": 1}\n')
    with pytest.raises(ValueError, match="--resume .* --overwrite"):
        check_output_paths(log_path=log)
    check_output_paths(log_path=log, resume=True)
    check_output_paths(log_path=log, overwrite=True)
    with pytest.raises(ValueError, match="is a directory"):
        check_output_paths(log_path=tmp_path)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not part of a checkpoint"):
        check_output_paths(save_dir=junk, overwrite=True, checkpoint_files=cp.checkpoint_files)
    with pytest.raises(ValueError, match="is a file"):
        check_output_paths(save_dir=junk / "notes.txt", checkpoint_files=cp.checkpoint_files)
    _save(tmp_path / "ck", 1)
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        check_output_paths(save_dir=tmp_path / "ck", checkpoint_files=cp.checkpoint_files)
    check_output_paths(save_dir=tmp_path / "ck", resume=True, checkpoint_files=cp.checkpoint_files)
    with pytest.raises(ValueError, match="nothing to resume"):
        check_output_paths(save_dir=tmp_path / "new", resume=True, checkpoint_files=cp.checkpoint_files)
    with pytest.raises(ValueError, match="lies inside the save folder"):
        check_output_paths(log_path=tmp_path / "new" / "logs" / "run.jsonl",
                           save_dir=tmp_path / "new", checkpoint_files=cp.checkpoint_files)
    bad = _unwritable_folder(tmp_path)
    with pytest.raises(ValueError, match="cannot write in"):
        check_output_paths(log_path=bad / "sub" / "run.jsonl")
    with pytest.raises(ValueError, match="cannot write in"):
        check_output_paths(save_dir=bad / "ck", checkpoint_files=cp.checkpoint_files)


# ------------------------------------------------------------------ the command line

def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, (n, err)
    return err


@pytest.mark.parametrize("argv,needles", [
    (["--clip-eps", "1e300"], ["clip_eps", "at most 10"]),
    (["--num-envs", "100000000"], ["num_envs", "at most 4096"]),
    (["--num-envs", "1e8"], ["--num-envs", "expected int"]),
    (["--target-return", "nan"], ["--target-return", "finite"]),
    (["--env-id", "NoSuchEnv-v9"], ["NoSuchEnv-v9", "not a registered"]),
])
def test_cartpole_cli_bad_values_are_one_line_errors(argv, needles, capsys, monkeypatch):
    from ppo_core.trainers import cartpole

    monkeypatch.setattr(cartpole, "_setup", lambda *a: pytest.fail("training started"))
    try:
        code = cartpole.cli_main(["--total-steps", "256", "--num-envs", "4"] + argv)
    except SystemExit as e:                       # argparse's own errors exit from the parser
        code = e.code
    assert code == 2
    _one_line_error(capsys, *needles)


def test_cartpole_cli_refuses_bad_outputs_before_training(tmp_path, capsys, monkeypatch):
    from ppo_core.trainers import cartpole

    small = ["--total-steps", "256", "--num-envs", "4", "--eval-every", "0"]
    assert cartpole.cli_main(small + ["--save", str(tmp_path / "ck")]) == 0
    capsys.readouterr()
    monkeypatch.setattr(cartpole, "_train", lambda cfg: pytest.fail("training started"))
    bad = _unwritable_folder(tmp_path)
    for argv, needles in [
            (["--save", str(tmp_path / "ck")], ["already holds a checkpoint", "--resume"]),
            (["--log", str(tmp_path)], ["is a directory"]),
            (["--save", str(bad / "ck")], ["cannot write in", str(bad)]),
            (["--log", str(bad / "run.jsonl")], ["cannot write in", str(bad)])]:
        assert cartpole.cli_main(small + argv) == 2, argv
        _one_line_error(capsys, *needles)
    monkeypatch.undo()
    for flag, value in (("--hidden", "32"), ("--env-id", "Acrobot-v1")):
        assert cartpole.cli_main(small + ["--save", str(tmp_path / "ck"), "--resume",
                                          flag, value]) == 2
        _one_line_error(capsys, "cannot resume", flag.lstrip("-").replace("-", "_"), value)


def test_rlhf_cli_refuses_bad_outputs_and_devices_before_training(tmp_path, capsys, monkeypatch):
    from ppo_core.trainers import rlhf

    monkeypatch.setattr(rlhf, "_setup", lambda *a: pytest.fail("training started"))
    bad = _unwritable_folder(tmp_path)
    cases = [(["--clip-eps", "1e300"], ["clip_eps", "at most 10"]),
             (["--save", str(bad / "ck")], ["cannot write in"]),
             (["--log", str(tmp_path)], ["is a directory"]),
             (["--log", str(bad / "run.jsonl")], ["cannot write in"])]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], ["device 'cuda'", "CUDA is not available"]))
    for argv, needles in cases:
        assert rlhf.cli_main(["--device", "cpu"] + argv) == 2, argv
        _one_line_error(capsys, *needles)


def test_sigterm_ends_a_run_like_ctrl_c(tmp_path):
    """SIGTERM (kill, timeout, a scheduler) inside a Run: the log keeps every finished
    iteration, the last one is checkpointed, the run reports itself interrupted."""
    saved, before = [], signal.getsignal(signal.SIGTERM)
    run = Run(tmp_path / "run.jsonl", total=5, save=lambda it, final: saved.append(it))
    with run:
        for it in run.iterations(0, 5):
            run.log_record({"iteration": it})
            if it == 2:
                os.kill(os.getpid(), signal.SIGTERM)
    assert run.interrupted and saved == [2]
    lines = (tmp_path / "run.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == [1, 2]
    assert signal.getsignal(signal.SIGTERM) is before         # the handler is put back


def test_cli_exit_status_when_interrupted_or_diverged(tmp_path, monkeypatch, capsys):
    from ppo_core.trainers import cartpole
    from ppo_core.trainers.run import TrainingDiverged

    small = ["--total-steps", "256", "--num-envs", "4", "--eval-every", "0"]

    def diverge(cfg):
        raise TrainingDiverged("training diverged at iteration 3 — loss is nan")
    monkeypatch.setattr(cartpole, "_train", diverge)
    assert cartpole.cli_main(small) == 1
    _one_line_error(capsys, "iteration 3")
    monkeypatch.undo()
    real = cartpole._iteration

    def stop(cfg, st, envs, env_state):
        if st.iteration == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(cfg, st, envs, env_state)
    monkeypatch.setattr(cartpole, "_iteration", stop)
    log = tmp_path / "run.jsonl"
    # SIGTERM during iteration 2: it finishes, is logged and checkpointed; exit 128 + 15
    assert cartpole.cli_main(small + ["--log", str(log), "--save", str(tmp_path / "ck")]) == 143
    assert len(log.read_text().splitlines()) == 2
    assert _load_iteration(tmp_path / "ck") == 2


def _load_iteration(folder) -> int:
    return ck.load_checkpoint(folder)[2]["iteration"]
