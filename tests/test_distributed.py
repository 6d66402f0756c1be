"""Data-parallel RLHF (`ppo_core.trainers.distributed`): two processes on the CPU with gloo.

Each multi-process test launches `tests/_ddp_worker.py` (or the CLI) through
`torch.distributed.run --standalone` (a free port) with one torch thread per rank, and
gives it a timeout, so a hang fails the test instead of stalling the suite (the launcher
is then stopped with SIGTERM, which torchrun passes on to the ranks).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ppo_core.trainers import distributed, rlhf

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("_ddp_worker.py")
TIMEOUT_S = 150          # per launch; a run here takes 10-30 s on two busy cores


def _start(cmd: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=kw.pop("stderr", subprocess.PIPE), **kw)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM first: torchrun passes it on to the ranks, which run in sessions of their
    own (a SIGKILL to the launcher would orphan them), and kills those that do not stop."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _run(cmd: list[str], timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    proc = _start(cmd)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(proc)
        raise AssertionError(f"{' '.join(cmd[:8])} ... ran past {timeout} s: a hang?") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _worker(nproc: int, out: Path, config: dict, *flags: str) -> subprocess.CompletedProcess:
    """Run the worker in `nproc` processes (1: plain python, no torchrun)."""
    out.mkdir(parents=True, exist_ok=True)
    config = {"dist_timeout": 60, **config}
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                 "--nproc-per-node", str(nproc)] if nproc > 1 else [sys.executable])
    return _run(launcher + [str(WORKER), str(out), json.dumps(config), *flags])


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def _load(out: Path, rank: int):
    from safetensors.torch import load_file

    return load_file(str(out / f"rank{rank}.safetensors")), json.loads((out / f"rank{rank}.json").read_text())


def _same_but_perf(a: dict, b: dict) -> set:
    """Keys whose values differ between two records, leaving out timings and samples."""
    return {k for k in a if not k.startswith("perf/") and k != "samples" and a[k] != b.get(k)}


# ---- one process: the plumbing is the identity --------------------------------------------------

def test_one_process_world_is_the_identity(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    world = distributed.init("cpu")
    model = torch.nn.Linear(2, 2)
    assert (world.rank, world.size, world.is_main, world.owns_group) == (0, 1, True, False)
    assert world.wrap(model) is model
    assert world.reduce({"a": 1.5}, "max") == {"a": 1.5}
    assert world.weighted_mean({"a": 0.25}, 7) == ({"a": 0.25}, 7)
    assert world.any(True) and not world.any(False)
    world.shutdown()                                     # nothing to close: a no-op


def test_bad_launch_settings_are_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ValueError, match="torchrun"):
        distributed.init("cpu")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        distributed.init("cpu")
    with pytest.raises(ValueError, match="nproc"):
        distributed.launch(0, ["rlhf"])
    with pytest.raises(SystemExit) as e:
        rlhf.cli_parser().parse_args(["--nproc", "0"])
    assert e.value.code == 2
    with pytest.raises(ValueError, match="dist_timeout"):
        rlhf.RLHFConfig(dist_timeout=0)


# ---- two processes ------------------------------------------------------------------------------

def test_two_ranks_keep_identical_weights_and_beta_on_different_prompts(tmp_path):
    """3 iterations, 2 minibatches × 2 epochs per rank, adaptive β and an early stop on
    target_kl that fires every iteration: the ranks must end with the same parameters (bit
    for bit), the same β and the same records, having sampled disjoint prompts with
    different seeds."""
    proc = _worker(2, tmp_path, {"steps": 3, "batch_size": 4, "minibatch_size": 2,
                                 "update_epochs": 2, "response_len": 8, "lr": 1e-3,
                                 "kl_target": 0.5, "kl_horizon": 100, "target_kl": 0.005})
    _ok(proc)
    (w0, r0), (w1, r1) = _load(tmp_path, 0), _load(tmp_path, 1)
    assert r0["world_size"] == r1["world_size"] == 2
    differ = [k for k in w0 if k.startswith("param.") and not torch.equal(w0[k], w1[k])]
    assert not differ, differ
    assert w0["param.pretrained_model.transformer.wte.weight"].abs().sum() > 0
    recs0, recs1 = r0["records"], r1["records"]
    assert len(recs0) == len(recs1) == 3
    for a, b in zip(recs0, recs1):
        assert not _same_but_perf(a, b), _same_but_perf(a, b)      # β, KL, losses, stops
        assert a["perf/world_size"] == 2
    assert [r["episodes"] for r in recs0] == [8, 16, 24]            # both ranks' episodes
    assert recs0[-1]["objective/beta"] != 0.05                      # β moved, on both alike
    assert any(r["charts/gradient_steps"] < 4 for r in recs0)       # the early stop fired
    for mine, theirs in zip(r0["prompts"], r1["prompts"]):          # the global batch, split
        assert len(mine) == len(theirs) == 4 and not set(mine) & set(theirs)
    assert (r0["seed"], r1["seed"]) == (0, 1)                       # sampling seeds differ


def test_two_ranks_with_groups_kl_in_the_loss_and_ptx(tmp_path):
    """Chapter 07's options under two ranks: GRPO groups (each rank holds whole groups of
    G = 2 samples of one prompt), KL in the loss (k3), clip-higher, a per-sequence loss
    aggregation and the pre-training term: the ranks end with the same parameters and
    records, and each rank's batch is whole groups of distinct prompts."""
    proc = _worker(2, tmp_path, {"steps": 2, "batch_size": 4, "minibatch_size": 2,
                                 "update_epochs": 1, "response_len": 8, "lr": 1e-3,
                                 "advantage": "grpo", "group_size": 2, "kl_in": "loss",
                                 "kl_estimator": "k3", "clip_eps_high": 0.28,
                                 "loss_agg": "seq-mean-token-mean", "ptx_coef": 0.1})
    _ok(proc)
    (w0, r0), (w1, r1) = _load(tmp_path, 0), _load(tmp_path, 1)
    differ = [k for k in w0 if k.startswith("param.") and not torch.equal(w0[k], w1[k])]
    assert not differ, differ
    for a, b in zip(r0["records"], r1["records"]):
        assert not _same_but_perf(a, b), _same_but_perf(a, b)
        assert a["losses/value_loss"] is None and a["losses/ptx_loss"] > 0
    for mine, theirs in zip(r0["prompts"], r1["prompts"]):
        for batch in (mine, theirs):                               # [p, p, q, q]
            assert batch[0] == batch[1] and batch[2] == batch[3] and batch[0] != batch[2]
        assert not set(mine) & set(theirs)


def test_one_process_whole_batch_equals_two_processes_half_each(tmp_path):
    """The first update with 8 episodes in one process equals that of 2 ranks × 4.

    Same episodes (each response sampled alone, seeded by its prompt), one epoch, one
    minibatch per rank, dropout off (the policy runs in eval mode). For equality three
    things are reduced across ranks: the advantages' mean and variance (whitening over all
    response tokens), the token count that normalises the per-token loss (each rank's loss
    is scaled by W·n_r/n before DDP averages the gradients), and the gradients (DDP).
    Measured: gradients agree to 2.2e-8 (largest 0.06); the parameters after Adam's step
    agree to 1e-6 wherever |g| > 1e-6 (Adam moves every weight by about lr·sign(g), so a
    gradient that is float noise, ~1e-9, may step either way, e.g. attention key biases)."""
    common = {"steps": 1, "update_epochs": 1, "response_len": 8, "lr": 1e-3}
    one, two = tmp_path / "one", tmp_path / "two"
    _ok(_worker(1, one, {**common, "batch_size": 8, "minibatch_size": 8,
                         "log_path": str(one / "log.jsonl")}, "--seeded-sampler"))
    _ok(_worker(2, two, {**common, "batch_size": 4, "minibatch_size": 4,
                         "log_path": str(two / "log.jsonl")}, "--seeded-sampler"))
    (wa, ra), (wb, rb), (_, rb1) = _load(one, 0), _load(two, 0), _load(two, 1)
    assert ra["prompts"][0] == rb["prompts"][0] + rb1["prompts"][0]
    grads = [k for k in wa if k.startswith("grad.")]
    assert grads and set(grads) == {k for k in wb if k.startswith("grad.")}
    for k in grads:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-6, rtol=1e-4, msg=k)
    for k in grads:
        p = "param." + k[len("grad."):]
        informative = wa[k].abs() > 1e-6                   # not float noise
        assert float(((wb[p] - wa[p]).abs() * informative).max()) <= 1e-6, p
    a, b = ra["records"][0], rb["records"][0]
    for key in a:
        if key.startswith(("objective/", "losses/", "charts/")):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key
    log_one = [json.loads(x) for x in (one / "log.jsonl").read_text().splitlines()]
    log_two = [json.loads(x) for x in (two / "log.jsonl").read_text().splitlines()]
    assert len(log_one) == len(log_two) == 1
    assert set(log_two[0]) == set(log_one[0]) | {"perf/world_size"}
    assert "perf/world_size" not in log_one[0] and log_two[0]["perf/world_size"] == 2


def test_a_failing_rank_ends_the_job_with_its_error(tmp_path):
    """Rank 1's reward function raises at iteration 2 while rank 0 waits for it in a
    collective: the job must stop with rank 1's error, long before the 60 s timeout."""
    start = time.monotonic()
    proc = _worker(2, tmp_path, {"steps": 4, "batch_size": 4, "minibatch_size": 2,
                                 "response_len": 8}, "--fail-rank", "1")
    elapsed = time.monotonic() - start
    assert proc.returncode != 0
    assert "injected failure on rank 1" in proc.stdout + proc.stderr
    assert elapsed < 55, elapsed                         # not the process-group timeout
    assert not (tmp_path / "rank0.json").exists()        # rank 0 did not finish either


def test_cli_nproc_and_torchrun_forms(tmp_path):
    """`python -m ppo_core rlhf --nproc 2 --log ...` and `torchrun ... -m ppo_core -- rlhf
    --log ...` both train in two processes; one log, written by rank 0, with the keys of a
    one-process log plus perf/world_size; only rank 0 prints."""
    flags = ["--steps", "2", "--batch-size", "2", "--minibatch-size", "2", "--response-len",
             "6", "--epochs", "1", "--threads", "1", "--device", "cpu", "--no-progress",
             "--dist-timeout", "60"]
    single = tmp_path / "single.jsonl"
    assert rlhf.cli_main(flags + ["--log", str(single)]) == 0
    keys = set(json.loads(single.read_text().splitlines()[0]))
    forms = {"nproc": [sys.executable, "-m", "ppo_core", "rlhf", "--nproc", "2"],
             "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc-per-node", "2", "-m", "ppo_core", "--", "rlhf"]}
    for name, cmd in forms.items():
        log = tmp_path / f"{name}.jsonl"
        proc = _run(cmd + flags + ["--log", str(log)])
        _ok(proc)
        assert proc.stdout.count("iter ") == 2 and proc.stdout.count("sample: ") == 1, name
        records = [json.loads(x) for x in log.read_text().splitlines()]
        assert [r["iteration"] for r in records] == [1, 2], name
        assert all(set(r) == keys | {"perf/world_size"} and r["perf/world_size"] == 2
                   and r["episodes"] == 4 * r["iteration"] for r in records), name


def test_nproc_launch_returns_the_failing_status(tmp_path):
    """Every rank refuses a model folder that does not exist (usage error, status 2): the
    launcher returns that status and says which rank failed."""
    proc = _run([sys.executable, "-m", "ppo_core", "rlhf", "--nproc", "2", "--model",
                 str(tmp_path / "missing"), "--device", "cpu", "--threads", "1"])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "must be 'tiny', 'gpt2' or an existing path" in proc.stderr
    assert "rank" in proc.stderr and "failed with exit status 2" in proc.stderr


def test_ctrl_c_on_the_launcher_stops_every_rank_and_keeps_log_and_checkpoint(tmp_path):
    """SIGINT to `--nproc 2` (what Ctrl-C sends): torchrun passes it to the ranks, rank 0
    keeps its log and checkpoints the last finished iteration, the status is 130."""
    import signal

    log, ckpt = tmp_path / "log.jsonl", tmp_path / "ckpt"
    cmd = [sys.executable, "-m", "ppo_core", "rlhf", "--nproc", "2", "--steps", "1000",
           "--batch-size", "2", "--minibatch-size", "2", "--response-len", "6", "--epochs",
           "1", "--threads", "1", "--device", "cpu", "--no-progress", "--dist-timeout", "60",
           "--log", str(log), "--save", str(ckpt)]
    proc = _start(cmd, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists() and len(log.read_text().splitlines()) >= 2:
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
    finally:
        _stop(proc)
    assert proc.returncode == 130, out[-3000:]
    lines = log.read_text().splitlines()
    state = json.loads((ckpt / rlhf.CHECKPOINT_META).read_text())["state"]
    assert state["interrupted"] and state["iteration"] == len(lines) >= 2
    assert out.count("Stopped early: the log keeps") == 1             # rank 0's notice only
