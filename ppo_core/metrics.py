"""One metrics format everywhere: a JSON object per iteration in a JSONL file.

Keys are namespaced as CleanRL and TRL do (`charts/episodic_return`, `losses/approx_kl`,
`objective/kl`, ...; the README lists them). Trainers write through `MetricsLog`, which
flushes every line, so an interrupted run keeps everything it logged; `read_log` gives the
records back for plots and for `ppo_core.diagnostics`.

With `tensorboard_dir`, `MetricsLog` also writes every numeric value of each record as a
TensorBoard scalar under the same key (`losses/approx_kl`, ...), at step
`record[step_key]` (`iteration`, or `global_step` for CartPole); lists, texts and the
step key itself are left out. `tensorboard --logdir DIR` shows them.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

__all__ = ["MetricsLog", "read_log", "iter_log", "is_diverged", "scalars", "check_tensorboard_dir"]


def _clean(value):
    """JSON-safe value. Non-finite floats are written as strings ("nan", "inf") so that
    the file stays valid JSON and a reader sees them instead of a crash."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


#: file names of TensorBoard event files (what `check_tensorboard_dir` looks for)
TB_EVENTS = "events.out.tfevents.*"


def scalars(record: dict, step_key: str = "iteration") -> dict[str, float]:
    """The numbers of `record` (ints, floats, bools as 0/1, 0-d tensors, and non-finite values
    in their logged form "nan"/"inf") under their own keys, without `step_key` and without
    lists or texts: what TensorBoard receives."""
    out = {}
    for k, v in record.items():
        if hasattr(v, "item") and getattr(v, "ndim", 0) == 0:
            v = v.item()
        if k != step_key and isinstance(v, (int, float)):
            out[k] = float(v)
        elif k != step_key and isinstance(v, str) and v in ("nan", "inf", "-inf"):
            out[k] = float(v)
    return out


def check_tensorboard_dir(directory, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse (ValueError) a TensorBoard folder that already holds event files unless the run
    continues it (`resume`) or replaces them (`overwrite`); refuse a path that is a file."""
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise ValueError(f"tensorboard path {str(d)!r} is a file, not a folder")
    if d.is_dir() and any(d.glob(TB_EVENTS)) and not (resume or overwrite):
        raise ValueError(f"tensorboard folder {str(d)!r} already holds a run's event files; pass "
                         f"--resume to continue it or --overwrite to replace them (or choose "
                         f"another --tensorboard)")


def _summary_writer(directory, purge_step: int | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:                                   # tensorboard not installed
        raise ValueError(f"tensorboard_dir needs the tensorboard package (pip install "
                         f"tensorboard): {e}") from None
    return SummaryWriter(str(directory), purge_step=purge_step, flush_secs=10)


class MetricsLog:
    """Append-only JSONL writer; also keeps the records in memory (`.records`).

    `MetricsLog(None)` keeps records in memory only. An existing, non-empty file is never
    truncated silently: it is continued with `resume=True` or replaced with `overwrite=True`,
    and refused (ValueError) otherwise. `resume=True` continues an existing file: its records are loaded (a half-written last line, from a killed run, is dropped),
    those for which `keep(record)` is false are dropped too (e.g. iterations after the
    checkpoint a run resumes from, which it will redo), the file is rewritten with the
    rest, atomically, and new records are appended after them.

    `tensorboard_dir` also writes each record's numbers as TensorBoard scalars (`scalars`) at
    step `record[step_key]`; its event files follow the same rules (`check_tensorboard_dir`):
    `overwrite` deletes the old ones, `resume` purges those from the first step redone on.
    """

    def __init__(self, path=None, resume: bool = False, keep=None, overwrite: bool = False,
                 tensorboard_dir=None, step_key: str = "iteration"):
        self.path = Path(path) if path is not None else None
        self.records: list[dict] = []
        self._fh = None
        self.step_key = step_key
        self._tb = None
        if tensorboard_dir is not None:
            check_tensorboard_dir(tensorboard_dir, resume, overwrite)
        if self.path is not None:
            if self.path.is_dir():
                raise ValueError(f"log path {str(self.path)!r} is a directory, not a file")
            if (not resume and not overwrite and self.path.exists()
                    and self.path.stat().st_size > 0):
                raise ValueError(f"log {str(self.path)!r} already holds a run; continue it "
                                 f"(resume) or replace it (overwrite), or choose another path")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if resume and self.path.exists():
                self.records = [r for r in read_log(self.path) if keep is None or keep(r)]
                tmp = self.path.with_name(self.path.name + ".tmp")
                tmp.write_text("".join(json.dumps(_clean(r)) + "\n" for r in self.records),
                               encoding="utf-8")
                os.replace(tmp, self.path)
                self._fh = open(self.path, "a", encoding="utf-8")
            else:
                self._fh = open(self.path, "w", encoding="utf-8")
        if tensorboard_dir is not None:
            self._tb = self._open_tensorboard(Path(tensorboard_dir), resume, overwrite)

    def _open_tensorboard(self, directory: Path, resume: bool, overwrite: bool):
        purge_step = None
        if resume:                     # the steps after the last kept record will be redone
            steps = [r[self.step_key] for r in self.records if self.step_key in r]
            purge_step = int(steps[-1]) + 1 if steps else 0
        elif overwrite:
            for old in directory.glob(TB_EVENTS):
                old.unlink()
        return _summary_writer(directory, purge_step)

    def write(self, record: dict) -> dict:
        record = _clean(dict(record))
        self.records.append(record)
        if self._fh is not None:
            self._fh.write(json.dumps(record) + "\n")
            self._fh.flush()
        if self._tb is not None:
            step = int(record.get(self.step_key, len(self.records)))
            for key, value in scalars(record, self.step_key).items():
                self._tb.add_scalar(key, value, step)
        return record

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def iter_log(path):
    """The records of a JSONL log, one at a time, read line by line (memory does not grow
    with the file). Non-finite numbers written as "nan"/"inf" come back as floats. A
    truncated last line (a killed run) is skipped; any other malformed line, or a file that
    is not UTF-8 text (a binary file), raises ValueError naming the file and the line."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"no log at {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a log file")
    pending = None                                   # a bad line: fatal unless it is the last
    with open(path, "rb") as fh:
        for i, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            if pending is not None:
                raise pending
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{i} is not UTF-8 text (byte {raw[e.start]:#04x} at "
                                 f"column {e.start + 1}): is it a binary file rather than a "
                                 f"JSONL log?") from None
            except json.JSONDecodeError as e:
                pending = ValueError(f"{path}:{i} is not valid JSON: {e}")
                continue
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{i} is not a JSON object")
            yield {k: (float(v) if v in ("nan", "inf", "-inf") else v) for k, v in obj.items()}


def read_log(path) -> list[dict]:
    """Records of a JSONL log, in order (`iter_log`). A truncated last line (a killed run) is
    skipped; any other malformed line raises ValueError naming its line number."""
    return list(iter_log(path))


def is_diverged(record: dict) -> bool:
    """True if `record` carries a truthy `*/diverged` flag (e.g. `bandit/diverged` = 1): the
    trainer stopped a run whose numbers blew up. The one definition the trainers' helpers,
    the plots and the doctor share."""
    return any(k.endswith("/diverged") and isinstance(v, (int, float)) and bool(v)
               for k, v in record.items())
