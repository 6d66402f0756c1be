"""Reading a log for the doctor: streamed, keeping only what the detectors read (chapter 06).

A log of 100 MB is mostly sample texts and metrics no detector looks at. `read_for_doctor`
reads it line by line and keeps, per record, the `iteration`, the metrics of `DOCTOR_KEYS`,
any `*/diverged` flag and any other non-finite number (the non-finite detector names every
key that blew up), plus the sample responses of the last third of the run (the only ones
the mode-collapse rule reads). Memory grows with the number of iterations, not the text.

Three formats, the course's and two others, mapped to the course's keys:

    JSONL (any name)             one JSON object per line, the course's keys (DESIGN.md)
    progress.csv (*.csv)         Stable-Baselines3's CSV logger: train/approx_kl, ...
    trainer_state.json (*.json)  a Hugging Face / TRL Trainer state: its `log_history`

Anything it cannot read raises ValueError naming the file; a log that holds none of the
metrics the doctor knows raises `NoKnownMetrics` (also a ValueError), listing those it looks
for, so that an unreadable log is never called healthy.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

from ..metrics import iter_log
from .signals import DOCTOR_KEYS, LATE_FRAC, Records, _is_number, _window

__all__ = ["read_for_doctor", "slim_records", "check_known_metrics", "NoKnownMetrics", "SB3_KEYS", "TRL_KEYS"]


class NoKnownMetrics(ValueError):
    """The log was read, but holds none of the metrics the doctor judges."""


#: Stable-Baselines3 (`progress.csv`) → the course's keys. SB3's entropy_loss is −entropy.
SB3_KEYS = {
    "train/approx_kl": "losses/approx_kl", "train/clip_fraction": "losses/clipfrac",
    "rollout/ep_rew_mean": "charts/episodic_return", "eval/mean_reward": "eval/return",
    "train/entropy_loss": "losses/entropy", "train/explained_variance": "losses/explained_variance",
    "train/value_loss": "losses/value_loss", "train/policy_gradient_loss": "losses/policy_loss",
    "time/iterations": "iteration", "time/total_timesteps": "global_step",
}
_NEGATED = {"train/entropy_loss"}

#: TRL (`trainer_state.json` → `log_history`; PPOTrainer's and older PPO keys) → the course's.
#: TRL's objective/kl and objective/entropy are both summed over a response's tokens, so the
#: detectors compare like with like.
TRL_KEYS = {
    "objective/kl": "objective/kl", "objective/entropy": "losses/entropy",
    "objective/scores": "objective/proxy_reward", "objective/rlhf_reward": "objective/rlhf_reward",
    "policy/approxkl_avg": "losses/approx_kl", "policy/clipfrac_avg": "losses/clipfrac",
    "loss/policy_avg": "losses/policy_loss", "loss/value_avg": "losses/value_loss",
    "val/clipfrac_avg": "losses/value_clipfrac", "objective/kl_coef": "objective/beta",
    "ppo/policy/approxkl": "losses/approx_kl", "ppo/policy/clipfrac": "losses/clipfrac",
    "ppo/policy/entropy": "losses/entropy", "ppo/mean_scores": "objective/proxy_reward",
    "ppo/val/var_explained": "losses/explained_variance", "ppo/loss/value": "losses/value_loss",
    "ppo/loss/policy": "losses/policy_loss", "episode": "episodes", "step": "iteration",
}


def _keep(key: str, value) -> bool:
    return (key in DOCTOR_KEYS or key == "iteration" or key.endswith("/diverged")
            or (_is_number(value) and not math.isfinite(value)))


def _count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            n += chunk.count(b"\n")
    return n + 1


class _Reader:
    """Accumulates slim records and what is worth telling about the log."""

    def __init__(self, n_lines: int, all_samples: bool = False):
        self.records = Records()
        # the last third of the records lies within the last third of the lines
        self.samples_from = 0 if all_samples else n_lines - _window(n_lines, LATE_FRAC)
        self.keys_seen: dict[str, None] = {}
        self.text_where_numbers: dict[str, tuple[int, object]] = {}

    def add(self, record: dict, line: int) -> None:
        slim = {}
        for k, v in record.items():
            if len(self.keys_seen) < 200:
                self.keys_seen.setdefault(k, None)
            if k == "samples":
                if line > self.samples_from:
                    slim["samples"] = _texts(v)
            elif _keep(k, v):
                if k in DOCTOR_KEYS and not _is_number(v):
                    n, example = self.text_where_numbers.get(k, (0, v))
                    self.text_where_numbers[k] = (n + 1, example)
                    continue
                slim[sys.intern(k)] = v              # one copy of each key, not one a line
        self.records.append(slim)

    def finish(self) -> Records:
        for k, (n, example) in self.text_where_numbers.items():
            self.records.notes.append(f"{k} holds {type(example).__name__} values, not numbers, "
                                      f"in {n} record(s) (e.g. {str(example)[:40]!r}): not judged")
        self.records.keys_seen = list(self.keys_seen)
        return self.records


def _texts(samples) -> list[str]:
    """Only the response texts of a record's samples (what the detectors read)."""
    if not isinstance(samples, list):
        return []
    return [str(x.get("response", x.get("text", ""))) if isinstance(x, dict) else str(x)
            for x in samples]


def slim_records(records: list[dict]) -> Records:
    """In-memory records as the doctor reads a file (`Records`, with `.notes`)."""
    reader = _Reader(len(records), all_samples=True)
    for i, r in enumerate(records, 1):
        reader.add(r, i)
    return reader.finish()


def read_for_doctor(path) -> Records:
    """The records of the log at `path`, slimmed to what the detectors read (see the module
    docstring), as `Records` with `.notes` and `.keys_seen`. ValueError naming the file if it
    cannot be read."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"no log at {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a log file")
    if path.suffix.lower() == ".csv":
        return _read_sb3_csv(path)
    if path.suffix.lower() == ".json":
        return _read_trl_state(path)
    reader = _Reader(_count_lines(path))
    for i, record in enumerate(iter_log(path), 1):
        reader.add(record, i)
    return reader.finish()


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def _read_sb3_csv(path: Path) -> Records:
    """Stable-Baselines3's `progress.csv`: one row per iteration, blank where a metric was
    not logged that iteration."""
    reader = _Reader(_count_lines(path))
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            for i, row in enumerate(csv.DictReader(fh), 1):
                rec = {}
                for k, v in row.items():
                    if k is None or v is None or v == "":
                        continue
                    key = SB3_KEYS.get(k, k)
                    value = _number(v)
                    rec[key] = -value if k in _NEGATED and _is_number(value) else value
                reader.add(rec, i)
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path} is not a readable CSV log ({e})") from None
    return reader.finish()


def _read_trl_state(path: Path) -> Records:
    """A Hugging Face Trainer's `trainer_state.json`: its `log_history`, one entry per
    logging step (evaluation entries, without training metrics, are kept too and ignored by
    the detectors that do not find their keys)."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}): is it a "
                         f"binary file?") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    history = state.get("log_history") if isinstance(state, dict) else None
    if not isinstance(history, list):
        raise ValueError(f"{path} holds no `log_history` list: not a trainer_state.json (for a "
                         f"JSONL log, name it *.jsonl)")
    reader = _Reader(len(history))
    for i, entry in enumerate(history, 1):
        if isinstance(entry, dict):
            reader.add({TRL_KEYS.get(k, k): v for k, v in entry.items()}, i)
    return reader.finish()


def check_known_metrics(records: Records, source: str = "the log") -> None:
    """`NoKnownMetrics` unless some record holds a number under one of `DOCTOR_KEYS`, a
    `*/diverged` flag or sample texts: without them every detector would stay silent, and
    silence must not read as "no problem found"."""
    for r in records:
        for k, v in r.items():
            if (k in DOCTOR_KEYS and _is_number(v)) or k.endswith("/diverged") or (
                    k == "samples" and v):
                return
    seen = getattr(records, "keys_seen", None) or sorted({k for r in records[:1000] for k in r})
    notes = getattr(records, "notes", [])
    raise NoKnownMetrics(
        f"{source} holds none of the metrics the doctor knows, so it can judge nothing"
        + (f" ({'; '.join(notes)})" if notes else "")
        + f". It has: {', '.join(seen[:12]) or 'no keys'}"
        + (" ..." if len(seen) > 12 else "")
        + f". It looks for: {', '.join(DOCTOR_KEYS)} (JSONL with the course's keys, "
          f"Stable-Baselines3's progress.csv or TRL's trainer_state.json).")
