"""Run management, shared by every trainer, so that each trainer's loop holds only PPO.

A `Run` owns what is not the algorithm: the JSONL log (`ppo_core.metrics.MetricsLog`), the
progress bar, Ctrl-C *and* SIGTERM (both end the run cleanly: the log keeps every finished
iteration and the last one is checkpointed), divergence (a non-finite loss, gradient,
parameter or metric becomes `TrainingDiverged`, naming the iteration), and the final
checkpoint. `losses_record` maps the statistics of `ppo_core.losses.ppo_objective` to the
log's `losses/*` keys, once for every trainer.

    with Run(cfg.log_path, total=n, desc="RLHF", progress=True, save=checkpoint) as run:
        for it in run.iterations(start, n):
            ...                                    # roll out, advantages, epochs, ...
            run.log(record)                        # checks, writes, advances the bar
    run.records, run.interrupted                   # after the block

Divergence is an exception type, not a message: `ppo_core._checks.NonFiniteError` (raised by
the input checks) and `TrainingDiverged` (raised here and by the trainers) both mean it.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator

from .._checks import NonFiniteError
from ..metrics import MetricsLog

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
              "grad_norm": "losses/grad_norm"}


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
                       overwrite: bool = False, checkpoint_marker: str | None = None) -> None:
    """Refuse, before any training, output paths that cannot be written or would destroy
    what the user did not ask to replace (`ValueError` naming the path and what to do).

    * `log_path` must not be a directory; an existing non-empty log is continued with
      `resume` or replaced with `overwrite`, never silently truncated.
    * `save_dir` must be a directory (or not exist yet) in a writable place; a non-empty
      folder is accepted only if it holds a checkpoint of this trainer (`checkpoint_marker`,
      a file name inside it) *and* the run resumes it or was told to `overwrite` it.
    """
    if log_path is not None:
        log = Path(log_path)
        if log.is_dir():
            raise ValueError(f"log path {str(log)!r} is a directory; give a file name, e.g. "
                             f"{str(log / 'run.jsonl')!r}")
        if log.exists() and log.stat().st_size > 0 and not (resume or overwrite):
            raise ValueError(f"log {str(log)!r} already holds a run; pass --resume to continue "
                             f"it or --overwrite to replace it (or choose another --log)")
        _check_writable(log.parent, f"log path {str(log)!r}")
    if save_dir is not None:
        save = Path(save_dir)
        if save.exists() and not save.is_dir():
            raise ValueError(f"save path {str(save)!r} is a file, not a folder")
        if resume and not (checkpoint_marker and (save / checkpoint_marker).is_file()):
            raise ValueError(f"nothing to resume: {str(save)!r} holds no checkpoint of this "
                             f"trainer")
        if save.is_dir() and any(save.iterdir()):
            ours = checkpoint_marker is not None and (save / checkpoint_marker).is_file()
            if not ours:
                raise ValueError(f"save folder {str(save)!r} is not empty and holds no checkpoint "
                                 f"of this trainer; refusing to replace what it holds (choose "
                                 f"an empty or new folder)")
            if not (resume or overwrite):
                raise ValueError(f"save folder {str(save)!r} already holds a checkpoint; pass "
                                 f"--resume to continue it or --overwrite to replace it")
            if log_path is not None and Path(log_path).resolve().parent == save.resolve():
                raise ValueError(f"the log {str(log_path)!r} lies inside the save folder "
                                 f"{str(save)!r}, which each checkpoint replaces")
        _check_writable(save.parent if not save.exists() else save, f"save path {str(save)!r}")


def _check_writable(folder: Path, what: str) -> None:
    import os

    probe = folder
    while not probe.exists():                     # the nearest existing ancestor is created from
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{what}: {str(probe)!r} is not a writable folder")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (`kill`, `timeout`, a job scheduler) raises KeyboardInterrupt
    like Ctrl-C, so the run ends the same clean way. Only in the main thread (elsewhere a
    handler cannot be installed, and Jupyter's stop button already sends SIGINT)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class Run:
    """The bookkeeping of one training run (see the module docstring).

    Args:
        log_path: JSONL log (None: records in memory only).
        resume: continue an existing log; `keep(record)` selects the records kept (those
            the checkpoint being resumed holds). overwrite: replace an existing log.
        total, initial, desc, progress: the progress bar (iterations).
        save: `save(iteration, final)` writes a checkpoint; called at the end of the run (also
            after an interrupt) when at least one iteration finished, unless it was the last
            one saved.
        callback: `callback(record)` after each logged record (e.g. a live plot).
        postfix: `postfix(record) -> dict` of short numbers for the bar.
        announce: print the notice of an interrupt (off on all but one of several ranks).
    """

    def __init__(self, log_path=None, *, resume: bool = False, overwrite: bool = False,
                 keep: Callable | None = None,
                 total: int = 0, initial: int = 0, desc: str = "PPO", progress: bool = False,
                 save: Callable | None = None, callback: Callable | None = None,
                 postfix: Callable | None = None, announce: bool = True):
        self.log_path, self.resume, self.keep = log_path, resume, keep
        self.announce = announce
        self.overwrite = overwrite
        self.total, self.initial, self.desc, self.progress = total, initial, desc, progress
        self.save, self.callback, self.postfix = save, callback, postfix
        self.interrupted = False
        self.iteration = initial             # iterations finished
        self.saved_at: int | None = None     # iteration of the last checkpoint
        self.log: MetricsLog | None = None
        self._bar = None
        self._signals = None

    @property
    def records(self) -> list[dict]:
        return self.log.records if self.log is not None else []

    def __enter__(self) -> "Run":
        self.log = MetricsLog(self.log_path, resume=self.resume, keep=self.keep,
                              overwrite=self.overwrite)
        from tqdm.auto import tqdm

        self._bar = tqdm(total=self.total, initial=self.initial, desc=self.desc,
                         disable=not self.progress, leave=False)
        self._signals = _sigterm_as_interrupt()
        self._signals.__enter__()
        return self

    def iterations(self, start: int, stop: int) -> Iterator[int]:
        """Iteration numbers start+1 .. stop (1-based: the number of the one being run)."""
        return iter(range(start + 1, stop + 1))

    def log_record(self, record: dict) -> dict:
        """Check every float of `record` is finite (`TrainingDiverged` otherwise), write it,
        advance the bar, call the callback. Marks the iteration finished."""
        bad = [k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise TrainingDiverged(f"non-finite metrics {bad}")
        record = self.log.write(record)
        self.iteration = int(record.get("iteration", self.iteration + 1))
        self._bar.update(1)
        if self.postfix is not None:
            self._bar.set_postfix(self.postfix(record))
        if self.callback is not None:
            self.callback(record)
        return record

    def checkpoint(self, final: bool = False) -> None:
        """Save now (through `save`), remembering at which iteration."""
        if self.save is not None and self.iteration > 0:
            self.save(self.iteration, final)
            self.saved_at = self.iteration

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._signals.__exit__(None, None, None)
        self._bar.close()
        self.log.close()
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self.interrupted = True
            if self.announce:
                print(f"Interrupted: the log keeps {len(self.records)} records"
                      + (", and the last finished iteration is checkpointed" if self.save else ""),
                      file=sys.stderr)
        elif exc_type is not None and issubclass(exc_type, (NonFiniteError, TrainingDiverged)):
            raise TrainingDiverged(
                f"training diverged at iteration {self.iteration + 1} — {exc}. Nothing from this "
                f"iteration was logged or saved; try a smaller learning rate or a clip "
                f"range.") from exc
        elif exc_type is not None:
            return False
        if self.saved_at != self.iteration and self.records:
            self.checkpoint(final=True)
        return self.interrupted
