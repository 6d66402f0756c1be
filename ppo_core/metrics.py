"""One metrics format everywhere: a JSON object per iteration in a JSONL file.

Keys are namespaced as CleanRL and TRL do (`charts/episodic_return`, `losses/approx_kl`,
`objective/kl`, ...; the README lists them). Trainers write through `MetricsLog`, which
flushes every line, so an interrupted run keeps everything it logged; `read_log` gives the
records back for plots and for `ppo_core.diagnostics`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

__all__ = ["MetricsLog", "read_log", "iter_log", "is_diverged"]


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


class MetricsLog:
    """Append-only JSONL writer; also keeps the records in memory (`.records`).

    `MetricsLog(None)` keeps records in memory only. An existing, non-empty file is never
    truncated silently: it is continued with `resume=True` or replaced with `overwrite=True`,
    and refused (ValueError) otherwise. `resume=True` continues an existing file: its records are loaded (a half-written last line, from a killed run, is dropped),
    those for which `keep(record)` is false are dropped too (e.g. iterations after the
    checkpoint a run resumes from, which it will redo), the file is rewritten with the
    rest, atomically, and new records are appended after them.
    """

    def __init__(self, path=None, resume: bool = False, keep=None, overwrite: bool = False):
        self.path = Path(path) if path is not None else None
        self.records: list[dict] = []
        self._fh = None
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

    def write(self, record: dict) -> dict:
        record = _clean(dict(record))
        self.records.append(record)
        if self._fh is not None:
            self._fh.write(json.dumps(record) + "\n")
            self._fh.flush()
        return record

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

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
