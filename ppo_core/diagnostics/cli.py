"""`python -m ppo_core doctor LOG`: the doctor from a shell.

Exit status: 0 no problem found, 1 problems found, 2 bad input (no such file, not a log: not
JSONL / CSV / trainer_state.json, binary, no records, a bad flag), 3 a readable log that holds
none of the metrics the doctor knows (it can judge nothing, so it says so instead of "no
problem found").
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .figure import plot_findings
from .reader import NoKnownMetrics
from .report import _records, diagnose, headline, report
from .signals import SIGNATURES

#: exit statuses (see the module docstring)
HEALTHY, PROBLEMS, BAD_INPUT, NOTHING_TO_JUDGE = 0, 1, 2, 3

# ---------------------------------------------------------------- command line

def _kl_target(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0 (the adaptive β "
                                         f"controller's KL target, e.g. 6), got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message):                      # one line, exit status 2
        self.exit(BAD_INPUT, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m ppo_core doctor",
        description="Read a metrics log — JSONL written by ppo_core's trainers (one JSON object "
                    "per iteration, keys such as losses/approx_kl, objective/kl, "
                    "objective/proxy_reward), Stable-Baselines3's progress.csv or TRL's "
                    "trainer_state.json — and name the training failures it shows: "
                    + ", ".join(SIGNATURES.values()) + ". Each finding lists the iterations, "
                    "the evidence and what to try.",
        epilog="exit status: 0 no problem found, 1 problems found, 2 bad input (missing file, "
               "not a log, binary, no records, bad flag), 3 the log holds none of the metrics "
               "the doctor knows (nothing to judge)")
    p.add_argument("log", metavar="LOG", help="path to the metrics log (*.jsonl; SB3 "
                   "progress.csv; TRL trainer_state.json)")
    p.add_argument("--json", action="store_true",
                   help="print the findings as one JSON object instead of text")
    p.add_argument("--kl-target", type=_kl_target, default=None,
                   help="the adaptive β controller's KL target (> 0), if the log does not "
                        "record it")
    p.add_argument("--plot", metavar="PNG", default=None,
                   help="also save a figure of the metrics with the findings shaded")
    return p


def cli_main(argv=None) -> int:
    """`python -m ppo_core doctor LOG [--json] [--kl-target X] [--plot PNG]`; returns the exit
    status: 0 healthy, 1 problems found, 2 bad input, 3 nothing the doctor can judge."""
    p = _parser()
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        records = _records(args.log)
        findings = diagnose(records, kl_target=args.kl_target)
    except NoKnownMetrics as e:
        print(f"doctor: {e}", file=sys.stderr)
        if args.plot:                             # the figure says so too
            return _plot(args, _records(args.log, require_known=False), []) or NOTHING_TO_JUDGE
        return NOTHING_TO_JUDGE
    except (OSError, ValueError) as e:            # UnicodeDecodeError is a ValueError
        text = str(e) if str(args.log) in str(e) else f"cannot read {args.log}: {e}"
        print(f"doctor: {text}", file=sys.stderr)
        return BAD_INPUT
    for note in records.notes:
        print(f"doctor: note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps({"log": str(args.log), "healthy": not findings,
                          "findings": [f.to_dict() for f in findings],
                          "headline": headline(records), "notes": records.notes}, indent=2))
    else:
        print(f"{args.log}:")
        print(report(findings, records))
    if args.plot and _plot(args, records, findings):
        return BAD_INPUT
    return PROBLEMS if findings else HEALTHY


def _plot(args, records, findings) -> int:
    """Save the figure to `args.plot`; BAD_INPUT (after one line on stderr) if it cannot be
    written, else 0."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plot_findings(records, findings, title=Path(args.log).name)
    try:
        fig.savefig(args.plot, dpi=110)
    except (OSError, ValueError) as e:
        print(f"doctor: cannot save the figure to {args.plot}: {e}", file=sys.stderr)
        return BAD_INPUT
    finally:
        plt.close(fig)
    return 0
