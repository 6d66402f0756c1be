"""The doctor's entry points: run every detector on a log, and say what it found (chapter 06)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..metrics import read_log
from .detectors import DETECTORS
from .signals import PERFORMANCE_KEYS, Finding, _fmt, _series

# ---------------------------------------------------------------- entry points

def _records(log) -> list[dict]:
    if isinstance(log, (str, Path)):
        records = read_log(log)
    elif isinstance(log, list) and all(isinstance(r, dict) for r in log):
        records = log
    else:
        raise ValueError(f"log must be a path to a JSONL log or a list of record dicts, "
                         f"got {type(log).__name__}")
    if not records:
        raise ValueError(f"log holds no records: {log if isinstance(log, (str, Path)) else '[]'}")
    return records


def diagnose(log, kl_target: float | None = None) -> list[Finding]:
    """Run every detector on `log` (a JSONL path or a list of records); return the findings
    (empty: no problem found). `kl_target` is the adaptive controller's KL target, when the
    log does not record it."""
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
    if not findings:
        lines.append("No problem found.")
        if records:
            h = headline(records)
            lines.append(f"  {h.pop('iterations')} iterations")
            for k, v in h.items():
                lines.append("  " + k + ": " + ", ".join(f"{a} {_fmt(b)}" for a, b in v.items()))
        return "\n".join(lines)
    lines.append(f"{len(findings)} problem(s) found.")
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
