"""Run management, shared by every trainer, so that each trainer's loop holds only PPO.

A `Run` owns what is not the algorithm: the JSONL log (`ppo_core.metrics.MetricsLog`), the
progress bar, Ctrl-C *and* SIGTERM (the first one lets the iteration under way finish, then
the run ends with its log complete and its last iteration checkpointed; a second one stops at
once, without saving the partial update), divergence (a non-finite loss, gradient,
parameter or metric becomes `TrainingDiverged`, naming the iteration), and the final
checkpoint. `losses_record` maps the statistics of `ppo_core.losses.ppo_objective` to the
log's `losses/*` keys, once for every trainer.

    with Run(cfg.log_path, total=n, desc="RLHF", progress=True, save=checkpoint) as run:
        for it in run.iterations(start, n):        # ends early, between iterations, on Ctrl-C
            ...                                    # roll out, advantages, epochs, ...
            run.log_record(record)                 # checks, writes, checkpoints, advances the bar
    run.records, run.interrupted                   # after the block

Divergence is an exception type, not a message: `ppo_core._checks.NonFiniteError` (raised by
the input checks) and `TrainingDiverged` (raised here and by the trainers) both mean it.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator

from .._checks import NonFiniteError
from ..metrics import MetricsLog, check_tensorboard_dir

__all__ = ["Run", "TrainingDiverged", "MinibatchStats", "losses_record", "check_finite",
           "check_output_paths"]


class TrainingDiverged(FloatingPointError):
    """A loss, gradient, parameter or logged metric stopped being finite. The message names
    the iteration; nothing of that iteration was logged or checkpointed."""


def check_finite(value: float, what: str) -> float:
    """`value` as a float; `TrainingDiverged` naming `what` if it is NaN or ±inf."""
    v = float(value.detach()) if hasattr(value, "detach") else float(value)
    if not math.isfinite(v):
        raise TrainingDiverged(f"{what} is {v}")
    return v


#: `ppo_objective` statistics → the log's keys (averaged over an update's minibatches)
_LOSS_KEYS = {"policy_loss": "losses/policy_loss", "value_loss": "losses/value_loss",
              "entropy": "losses/entropy", "approx_kl": "losses/approx_kl",
              "approx_kl_k3": "losses/approx_kl_k3", "clipfrac": "losses/clipfrac",
              "value_clipfrac": "losses/value_clipfrac", "kl_ref": "losses/kl_ref",
              "grad_norm": "losses/grad_norm", "ptx_loss": "losses/ptx_loss"}


class MinibatchStats:
    """Running means of the per-minibatch statistics of one update (`add(stats)` per step),
    and the largest ratio seen (`ratio_max`)."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.steps = 0
        self.ratio_max = 0.0

    def add(self, stats: dict) -> None:
        for k, v in stats.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.ratio_max = max(self.ratio_max, float(stats.get("ratio_max", 0.0)))
        self.steps += 1

    def mean(self) -> dict[str, float]:
        return {k: v / max(self.steps, 1) for k, v in self.sums.items()}


def losses_record(stats: MinibatchStats) -> dict:
    """The `losses/*` part of a log record from an update's `MinibatchStats`."""
    mean = stats.mean()
    rec = {key: mean[name] for name, key in _LOSS_KEYS.items() if name in mean}
    rec["losses/ratio_max"] = stats.ratio_max
    return rec


def check_output_paths(log_path=None, save_dir=None, resume: bool = False,
                       overwrite: bool = False, checkpoint_files: Callable | None = None,
                       tensorboard_dir=None, video_path=None) -> None:
    """Refuse, before any training, output paths that cannot be written or would destroy
    what the user did not ask to replace (`ValueError` naming the path and what to do).

    * `log_path` must not be a directory; an existing non-empty log is continued with
      `resume` or replaced with `overwrite`, never silently truncated; it must not lie
      inside `save_dir` (each checkpoint replaces that folder whole).
    * `save_dir` must be a folder (or not exist yet) whose parent folder is writable
      (checkpoints are written beside it and swapped in); a save cut off by a crash is
      repaired first. A non-empty folder
      is accepted only if it holds a checkpoint of this trainer and nothing else —
      `checkpoint_files(folder)` gives the names a checkpoint there consists of (empty: none)
      — *and* the run resumes it or was told to `overwrite` it.
    * `tensorboard_dir` must not hold event files already, unless `resume` or `overwrite`
      (`ppo_core.metrics.check_tensorboard_dir`); `video_path`, a file to write after
      training, must not exist unless `resume` or `overwrite`.
    """
    save = Path(save_dir) if save_dir is not None else None
    if log_path is not None:
        log = Path(log_path)
        if log.is_dir():
            raise ValueError(f"log path {str(log)!r} is a directory; give a file name, e.g. "
                             f"{str(log / 'run.jsonl')!r}")
        if save is not None and save.resolve() in log.resolve().parents:
            raise ValueError(f"the log {str(log)!r} lies inside the save folder {str(save)!r}, "
                             f"which each checkpoint replaces whole; put it beside the folder")
        if log.exists() and log.stat().st_size > 0 and not (resume or overwrite):
            raise ValueError(f"log {str(log)!r} already holds a run; pass --resume to continue "
                             f"it or --overwrite to replace it (or choose another --log)")
        _check_writable(log.parent, f"log path {str(log)!r}")
    if tensorboard_dir is not None:
        check_tensorboard_dir(tensorboard_dir, resume, overwrite)
        _check_writable(Path(tensorboard_dir), f"tensorboard folder {str(tensorboard_dir)!r}")
    if video_path is not None:
        video = Path(video_path)
        if video.is_dir():
            raise ValueError(f"video path {str(video)!r} is a folder; give a file name, e.g. "
                             f"{str(video / 'agent.gif')!r}")
        if video.exists() and not (resume or overwrite):
            raise ValueError(f"video {str(video)!r} already exists; pass --overwrite to replace "
                             f"it (or choose another --video)")
        _check_writable(video.parent, f"video path {str(video)!r}")
    if save is None:
        return
    if save.exists() and not save.is_dir():
        raise ValueError(f"save path {str(save)!r} is a file, not a folder")
    _check_writable(save.absolute().parent, f"save path {str(save)!r}")
    from ..lm.cache import recover_interrupted_swap

    recover_interrupted_swap(save)
    own = set(checkpoint_files(save)) if checkpoint_files is not None and save.is_dir() else set()
    if resume and not own:
        raise ValueError(f"nothing to resume: {str(save)!r} holds no checkpoint of this trainer")
    if save.is_dir():
        others = sorted(p.name for p in save.iterdir() if p.name not in own)
        if others:
            raise ValueError(f"save folder {str(save)!r} holds {len(others)} file(s) that are not "
                             f"part of a checkpoint of this trainer (e.g. {others[:3]}); refusing "
                             f"to replace them: choose an empty or new folder")
        if own and not (resume or overwrite):
            raise ValueError(f"save folder {str(save)!r} already holds a checkpoint; pass "
                             f"--resume to continue it or --overwrite to replace it")


def _check_writable(folder: Path, what: str) -> None:
    """Raise unless files can be created in `folder`, or in its nearest existing ancestor
    (where the missing folders will be made). Tried for real — a file is created and removed
    — because permission bits do not tell (root, read-only mounts, /sys, /proc)."""
    import os
    import tempfile

    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{what}: {str(probe)!r} is not a folder")
    try:
        fd, name = tempfile.mkstemp(dir=probe, prefix=".ppo_course_probe-")
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise ValueError(f"{what}: cannot write in {str(probe)!r} ({e.strerror or e}); choose "
                         f"a folder you can write to") from None


class _StopRequests:
    """Within the block, the first Ctrl-C (SIGINT; Jupyter's stop button sends it too) or
    SIGTERM (`kill`, `timeout`, a job scheduler) only *asks* the run to stop: the iteration
    under way finishes, is logged and checkpointed, then the run ends. A second one raises
    KeyboardInterrupt at once (that iteration's partial update is then not saved). Only in
    the main thread: elsewhere a handler cannot be installed and Ctrl-C raises at once."""

    def __init__(self, announce: bool = True):
        self.signal: int | None = None
        self.announce = announce
        self._old: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.signal is not None:
            raise KeyboardInterrupt(f"signal {signum}, again")
        self.signal = signum
        if self.announce:
            print(f"\n{signal.Signals(signum).name}: stopping after this iteration "
                  f"(send it again to stop at once)", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


class Run:
    """The bookkeeping of one training run (see the module docstring).

    Args:
        log_path: JSONL log (None: records in memory only).
        resume: continue an existing log, keeping the records of the iterations the
            checkpoint holds (≤ `initial`; or those for which `keep(record)` is true).
        overwrite: replace an existing log.
        total, initial, desc, progress: the progress bar (iterations; `initial` finished).
        save: `save(iteration, final)` writes a checkpoint of the last finished iteration;
            called every `save_every` iterations (0: never on the way) and once at the end,
            also after a stop request or an interrupt that came between iterations.
        callback: `callback(record)` after each logged record (e.g. a live plot).
        postfix: `postfix(record) -> dict` of short numbers for the bar.

        tensorboard_dir: also write each record's numbers as TensorBoard scalars there, at
            step `record[step_key]` (`ppo_core.metrics.MetricsLog`).
        agree: several processes: `agree(stop_requested) -> bool`, called by every rank
            before each iteration, returns whether any rank was asked to stop, so that all
            stop after the same iteration (`ppo_core.trainers.distributed.World.any`).
        announce: print the stop notices (off on all ranks but one).

    After the block: `records`, `interrupted` (the run stopped early on a signal or a
    KeyboardInterrupt), `stopped_at_once` (by a KeyboardInterrupt, possibly mid-iteration),
    `stop_signal` (the signal number, or None), `saved_at`.
    """

    def __init__(self, log_path=None, *, resume: bool = False, overwrite: bool = False,
                 keep: Callable | None = None, total: int = 0, initial: int = 0,
                 desc: str = "PPO", progress: bool = False, save: Callable | None = None,
                 save_every: int = 0, callback: Callable | None = None,
                 postfix: Callable | None = None, tensorboard_dir=None,
                 step_key: str = "iteration", agree: Callable[[bool], bool] | None = None,
                 announce: bool = True):
        self.log_path, self.resume, self.overwrite = log_path, resume, overwrite
        self.tensorboard_dir, self.step_key = tensorboard_dir, step_key
        self.keep = keep if keep is not None else (lambda r: r.get("iteration", 0) <= initial)
        self.total, self.initial, self.desc, self.progress = total, initial, desc, progress
        self.save, self.save_every = save, save_every
        self.callback, self.postfix = callback, postfix
        self.interrupted = False
        self.stopped_at_once = False
        self.iteration = initial             # iterations finished
        self.saved_at: int | None = None     # iteration of the last checkpoint
        self.log: MetricsLog | None = None
        self._bar = None
        self._stops = _StopRequests(announce)
        self.agree, self.announce = agree, announce
        self._in_iteration = False           # an update under way (its state is partial)

    @property
    def records(self) -> list[dict]:
        return self.log.records if self.log is not None else []

    @property
    def stop_signal(self) -> int | None:
        return self._stops.signal

    def __enter__(self) -> "Run":
        self.log = MetricsLog(self.log_path, resume=self.resume, keep=self.keep,
                              overwrite=self.overwrite, tensorboard_dir=self.tensorboard_dir,
                              step_key=self.step_key)
        from tqdm.auto import tqdm

        self._bar = tqdm(total=self.total, initial=self.initial, desc=self.desc,
                         disable=not self.progress, leave=False)
        self._stops.__enter__()
        return self

    def iterations(self, start: int, stop: int) -> Iterator[int]:
        """Iteration numbers start+1 .. stop (1-based: the number of the one being run);
        ends early, between iterations, when a stop was requested (Ctrl-C, SIGTERM)."""
        for it in range(start + 1, stop + 1):
            stop_requested = self._stops.signal is not None
            if self.agree is not None:
                stop_requested = self.agree(stop_requested)
            if stop_requested:
                self.interrupted = True
                return
            self._in_iteration = True
            yield it

    def log_record(self, record: dict) -> dict:
        """Check every float of `record` is finite (`TrainingDiverged` otherwise), write it,
        mark the iteration finished, checkpoint every `save_every`, advance the bar, call the
        callback."""
        bad = [k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise TrainingDiverged(f"non-finite metrics {bad}")
        record = self.log.write(record)
        self.iteration = int(record.get("iteration", self.iteration + 1))
        self._in_iteration = False
        if self.save_every and self.iteration % self.save_every == 0:
            self.checkpoint()
        self._bar.update(1)
        if self.postfix is not None:
            self._bar.set_postfix(self.postfix(record))
        if self.callback is not None:
            self.callback(record)
        return record

    def checkpoint(self, final: bool = False) -> None:
        """Save the last finished iteration now (through `save`)."""
        if self.save is not None and self.iteration > self.initial:
            self.save(self.iteration, final)
            self.saved_at = self.iteration

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._stops.__exit__()
        self._bar.close()
        self.log.close()
        if exc_type is not None and issubclass(exc_type, (NonFiniteError, TrainingDiverged)):
            raise TrainingDiverged(
                f"training diverged at iteration {self.iteration + 1} — {exc}. Nothing from this "
                f"iteration was logged or saved; try a smaller learning rate or a clip "
                f"range.") from exc
        if exc_type is not None and not issubclass(exc_type, KeyboardInterrupt):
            return False
        partial = exc_type is not None and self._in_iteration
        self.stopped_at_once = exc_type is not None          # a KeyboardInterrupt, not a request
        self.interrupted = self.interrupted or exc_type is not None
        if not partial and self.saved_at != self.iteration and self.records:
            self.checkpoint(final=True)
        if self.interrupted and self.announce:
            kept = (f"the checkpoint of iteration {self.saved_at} is kept"
                    if self.saved_at is not None else "no checkpoint was written")
            print(f"Stopped early: the log keeps {len(self.records)} records; {kept}"
                  + ("; the interrupted iteration's partial update was not saved"
                     if partial else ""), file=sys.stderr)
        return True
