"""One config style for every trainer: a typed dataclass whose fields carry their help text,
validated in one place, from which the command line is generated (CleanRL's `Args`, TRL's
`metadata={"help": ...}`).

    @dataclass
    class MyConfig(TrainerConfig):
        lr: float = arg(3e-4, "Adam learning rate")
        def validate(self): positive_finite(self.lr, "lr")

    MyConfig(lr=-1)                          # ValueError: lr must be a finite number > 0 ...
    cfg.replace(lr=1e-3)                     # a validated copy
    parser = build_parser(MyConfig, prog=..., description=...)
    cfg = config_from_args(MyConfig, parser.parse_args(argv))

The vocabulary shared by the trainers (README, "Names"): `update_epochs` (passes over each
batch), `gae_lambda` (λ), `target_kl` (stop an update's epochs once approx_kl exceeds it, as
CleanRL and TRL use it), `kl_target` (the adaptive β controller's target), `log_path`,
`save_dir`, `resume`, `overwrite`, `progress`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
import sys
from dataclasses import MISSING, field, fields

__all__ = ["arg", "TrainerConfig", "build_parser", "config_from_args", "UsageError", "run_cli",
           "MAX_CLIP_EPS", "check_clip_eps"]

MAX_CLIP_EPS = 10.0
"""The widest clip range a trainer accepts: ratios beyond e^±10 are clipped by the log-ratio
bound of `ppo_core.losses` anyway, so a larger ε only hides a typo (1e300 for 0.3)."""


def check_clip_eps(value, name: str = "clip_eps") -> None:
    """`value` is None or a finite ε in (0, MAX_CLIP_EPS]; ValueError naming `name` otherwise."""
    from .._checks import positive_finite

    if positive_finite(value, name, allow_none=True) is not None and value > MAX_CLIP_EPS:
        raise ValueError(f"{name} must be at most {MAX_CLIP_EPS} (beyond, the clip never acts "
                         f"and exp(±ε) overflows), got {value!r}")


class UsageError(ValueError):
    """Bad command-line input: the CLI prints it on one line and exits with status 2."""


def arg(default, help: str, *, flag: str | None = None, choices=None, zero_is_none: bool = False,
        cli: bool = True):
    """A config field whose `help` is also the `--help` line of its flag.

    flag: the flag's name when it is not `--field-name`; choices: allowed values;
    zero_is_none: on the command line, 0 means None (off); cli: False keeps it off the CLI.
    """
    meta = {"help": help, "flag": flag, "choices": choices, "zero_is_none": zero_is_none,
            "cli": cli}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


class TrainerConfig:
    """Base of the trainers' configs: validated on construction (`validate`, defined by each
    config), `replace(**changes)` for a validated copy, plain-dict round trip for checkpoints."""

    def __post_init__(self):
        self.check_types()
        self.validate()

    def check_types(self) -> None:
        """Every field holds its annotated type (bool is not an int here; an int is a float;
        None only where the annotation allows it): the same check for every trainer."""
        for f in fields(self):
            value, (type_name, optional) = getattr(self, f.name), _base_type(f.type)
            if value is None:
                if not optional:
                    raise ValueError(f"{f.name} must not be None")
                continue
            ok = {"bool": lambda v: isinstance(v, bool),
                  "int": lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool),
                  "float": lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool),
                  "str": lambda v: isinstance(v, str)}.get(type_name, lambda v: True)(value)
            if not ok:
                raise ValueError(f"{f.name} must be {'a' if type_name != 'int' else 'an'} "
                                 f"{type_name}{' or None' if optional else ''}, got {value!r}")

    def validate(self) -> None:                      # overridden by each config
        return None

    def replace(self, **changes):
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}; valid: {sorted(names)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        """The config saved by `to_dict` (unknown keys, e.g. from an older version, ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# ------------------------------------------------------------------------- command line

_NONE_WORDS = ("none", "off")


def _base_type(annotation: str) -> tuple[str, bool]:
    """('float', True) for "float | None": the type name and whether None is allowed."""
    parts = [p.strip() for p in str(annotation).split("|")]
    optional = "None" in parts
    parts = [p for p in parts if p != "None"]
    return (parts[0] if parts else "str"), optional


def _parse(type_name: str, optional: bool, zero_is_none: bool, flag: str):
    cast = {"int": int, "float": float, "str": str}[type_name]

    def parse(text: str):
        if optional and text.strip().lower() in _NONE_WORDS:
            return None
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {type_name}"
                                             + (" or 'none'" if optional else "")
                                             + f", got {text!r}") from None
        if type_name == "float" and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if zero_is_none and value == 0:
            return None
        return value
    return parse


_BOOL_OR_AUTO = {"auto": None, "on": True, "off": False}


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line naming the argument (exit status 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(cls, prog: str, description: str) -> argparse.ArgumentParser:
    """An argparse parser with one flag per field of the dataclass `cls` (its `arg` metadata:
    help, flag, choices). bool → `--x/--no-x`; `bool | None` → auto/on/off; `X | None` →
    also accepts 'none' (and 0 where `zero_is_none`); floats must be finite."""
    p = _Parser(prog=prog, description=description,
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in fields(cls):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        type_name, optional = _base_type(f.type)
        if type_name == "bool" and optional:
            inverse = {v: k for k, v in _BOOL_OR_AUTO.items()}
            p.add_argument(flag, dest=f.name, choices=list(_BOOL_OR_AUTO),
                           default=inverse[default], help=meta["help"])
        elif type_name == "bool":
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                           default=default, help=meta["help"])
        else:
            choices = meta.get("choices")
            p.add_argument(flag, dest=f.name, default=default, help=meta["help"],
                           type=None if choices else
                           _parse(type_name, optional, meta.get("zero_is_none", False), flag),
                           metavar=(type_name.upper() + ("|none" if optional else ""))
                           if not choices else None,
                           choices=([c if c is not None else "none" for c in choices]
                                    if choices else None))
    return p


def config_from_args(cls, args: argparse.Namespace):
    """`cls(**fields from args)`; 'none' choices become None, auto/on/off become None/True/False.
    Raises UsageError (one line naming the field and the value) on an invalid config."""
    kw = {}
    for f in fields(cls):
        if not hasattr(args, f.name):
            continue
        v = getattr(args, f.name)
        type_name, optional = _base_type(f.type)
        if type_name == "bool" and optional and isinstance(v, str):
            v = _BOOL_OR_AUTO[v]
        elif optional and isinstance(v, str) and v.lower() in _NONE_WORDS:
            v = None
        kw[f.name] = v
    try:
        return cls(**kw)
    except ValueError as e:
        raise UsageError(str(e)) from None


def run_cli(cls, parser: argparse.ArgumentParser, argv, train, summary) -> int:
    """The shared body of a trainer's command line: parse, build and validate the config,
    train, print `summary(result, cfg)`. Exit status: 0 done; 1 the run diverged; 2 a usage
    error — bad values, paths, checkpoints, devices — printed as one line naming the
    argument, no traceback; 128 + the signal number when Ctrl-C (130) or SIGTERM (143)
    stopped the run (its log is complete and its last finished iteration checkpointed)."""
    from .run import TrainingDiverged

    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(cls, args)
        result = train(cfg)
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as e:          # bad input: values, paths, checkpoints, devices
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    summary(result, cfg)
    if result.interrupted:
        return 128 + (result.stop_signal or 2)
    return 0
