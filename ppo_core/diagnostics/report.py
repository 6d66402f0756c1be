"""The doctor's entry points: run every detector on a log, and say what it found (chapter 06)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .detectors import DETECTORS
from .reader import check_known_metrics, read_for_doctor, slim_records
from .signals import PERFORMANCE_KEYS, Finding, Records, _fmt, _is_number, _series

# ---------------------------------------------------------------- entry points

def _records(log, require_known: bool = True) -> Records:
    """`log` (a path, a list of record dicts, or `Records` already read) as `Records`:
    read once, slimmed to what the detectors need, checked to hold something to judge
    (ValueError: unreadable or empty; `NoKnownMetrics`: none of the doctor's metrics)."""
    if isinstance(log, Records):
        return log
    if isinstance(log, (str, Path)):
        records, source = read_for_doctor(log), str(log)
    elif isinstance(log, list) and all(isinstance(r, dict) for r in log):
        records, source = slim_records(log), "the records"
    else:
        raise ValueError(f"log must be a path to a JSONL log or a list of record dicts, "
                         f"got {type(log).__name__}")
    if not records:
        raise ValueError(f"log holds no records: {log if isinstance(log, (str, Path)) else '[]'}")
    if require_known:
        check_known_metrics(records, source)
    return records


def diagnose(log, kl_target: float | None = None) -> list[Finding]:
    """Run every detector on `log` (a JSONL path, SB3 progress.csv, TRL trainer_state.json, or
    a list of records); return the findings (empty: no problem found). `kl_target` is the
    adaptive controller's KL target (> 0), when the log does not record it. ValueError if the
    log cannot be read; `NoKnownMetrics` (a ValueError) if it holds none of the metrics the
    doctor knows: that is never "no problem found"."""
    if kl_target is not None and not (_is_number(kl_target) and math.isfinite(kl_target)
                                      and kl_target > 0):
        raise ValueError(f"kl_target must be a finite number > 0 or None, got {kl_target!r}")
    records = _records(log)
    findings = []
    for name, fn in DETECTORS.items():
        f = fn(records, kl_target=kl_target) if name == "kl_blowup" else fn(records)
        if f is not None:
            findings.append(f)
    return findings


def headline(records: list[dict]) -> dict:
    """Headline numbers of a run: iterations, first → last (best) performance, last KL, β,
    entropy, explained variance, proxy and gold where present."""
    records = _records(records)
    out = {"iterations": len(records)}
    for key in (*PERFORMANCE_KEYS, "objective/gold_reward"):
        _, x = _series(records, key)
        if x.size:
            out[key] = {"first": float(x[0]), "last": float(x[-1]), "best": float(x.max())}
    for key in ("objective/kl", "objective/beta", "losses/approx_kl", "losses/entropy",
                "losses/explained_variance"):
        _, x = _series(records, key)
        if x.size:
            out[key] = {"last": float(x[-1]), "median": float(np.median(x))}
    return out


def report(findings: list[Finding], records: list[dict] | None = None) -> str:
    """Readable text: each finding with its iterations, evidence and fix; or, for none,
    "No problem found." with the headline numbers of `records` (when given)."""
    lines = []
    notes = getattr(records, "notes", None) or []
    if not findings:
        lines.append("No problem found." + (" (Some metrics were not judged: see the notes.)"
                                            if notes else ""))
        lines += [f"  note: {n}" for n in notes]
        if records:
            h = headline(records)
            lines.append(f"  {h.pop('iterations')} iterations")
            for k, v in h.items():
                lines.append("  " + k + ": " + ", ".join(f"{a} {_fmt(b)}" for a, b in v.items()))
        return "\n".join(lines)
    lines.append(f"{len(findings)} problem(s) found.")
    lines += [f"  note: {n}" for n in notes]
    for f in findings:
        its = f.iterations
        span = (f"iterations {its[0]}–{its[-1]} ({len(its)})" if len(its) > 3
                else "iteration(s) " + ", ".join(map(str, its)))
        lines.append("")
        lines.append(f"● {f.title} — {span}")
        if f.summary:
            lines.append(f"  {f.summary}")
        for k, v in f.evidence.items():
            if isinstance(v, list):
                v = "; ".join(repr(x[:60]) for x in v)
            lines.append(f"    {k}: {v}")
        lines.append(f"  Try: {f.fix}")
    return "\n".join(lines)
