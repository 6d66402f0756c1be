"""`python -m ppo_core doctor LOG`: the doctor from a shell."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .figure import plot_findings
from .report import _records, diagnose, headline, report
from .signals import SIGNATURES

# ---------------------------------------------------------------- command line

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ppo_core doctor",
        description="Read a JSONL metrics log written by ppo_core's trainers (one JSON object "
                    "per iteration, keys such as losses/approx_kl, objective/kl, "
                    "objective/proxy_reward) and name the training failures it shows: "
                    + ", ".join(SIGNATURES.values()) + ". Each finding lists the iterations, "
                    "the evidence and what to try.",
        epilog="exit status: 0 no problem found, 1 problems found, 2 bad input (missing file, "
               "not JSONL, no records)")
    p.add_argument("log", metavar="LOG", help="path to the JSONL metrics log")
    p.add_argument("--json", action="store_true",
                   help="print the findings as one JSON object instead of text")
    p.add_argument("--kl-target", type=float, default=None,
                   help="the adaptive β controller's KL target, if the log does not record it")
    p.add_argument("--plot", metavar="PNG", default=None,
                   help="also save a figure of the metrics with the findings shaded")
    return p


def cli_main(argv=None) -> int:
    """`python -m ppo_core doctor LOG [--json] [--kl-target X] [--plot PNG]`; returns the exit
    status: 0 healthy, 1 problems found, 2 bad input."""
    p = _parser()
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        records = _records(args.log)
        findings = diagnose(records, kl_target=args.kl_target)
    except ValueError as e:
        print(f"doctor: {e}", file=sys.stderr)
        return 2
    except (OSError, UnicodeDecodeError) as e:
        print(f"doctor: cannot read {args.log}: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"log": str(args.log), "healthy": not findings,
                          "findings": [f.to_dict() for f in findings],
                          "headline": headline(records)}, indent=2))
    else:
        print(f"{args.log}:")
        print(report(findings, records))
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        fig = plot_findings(records, findings, title=Path(args.log).name)
        fig.savefig(args.plot, dpi=110)
    return 1 if findings else 0
