"""Checkpoints: tensors in a safetensors file, everything else in a JSON file (chapter 03).

A checkpoint is a directory:

    DIR/weights.safetensors   named tensors (model weights, optimizer moments, RNG state)
    DIR/checkpoint.json       {"config": {...}, "state": {...}}: plain JSON, no pickle

Nothing is unpickled when loading, so a checkpoint from someone else cannot run code.
Both files (and a manifest of their SHA-256 sums) are written into a temporary folder that
is then swapped into place (`ppo_core.lm.cache.atomic_build`), so an interrupted save
(Ctrl-C, SIGTERM, even SIGKILL) leaves the previous checkpoint or the new one, never a mix
of the two and never nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

__all__ = ["save_checkpoint", "load_checkpoint", "optimizer_tensors", "load_optimizer_tensors",
           "WEIGHTS", "META"]

WEIGHTS = "weights.safetensors"
META = "checkpoint.json"


def save_checkpoint(directory, tensors: dict, config: dict, state: dict | None = None) -> Path:
    """Write `tensors` (name → tensor) and `config`/`state` (JSON-able dicts) to `directory`.

    Returns the directory as a Path. Tensors are saved contiguous, on the CPU, detached.
    `directory` is replaced as a whole; a non-empty folder that holds no checkpoint is refused
    (ValueError), so nothing else in it is ever deleted.
    """
    from ..lm.cache import atomic_build

    if not isinstance(tensors, dict) or not tensors:
        raise ValueError(f"tensors must be a non-empty dict of name -> tensor, got {type(tensors).__name__}")
    directory = Path(directory)
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {"config": config, "state": state or {}}
    text = json.dumps(meta, indent=1)                    # fails before anything is written

    def write(tmp: Path) -> None:
        save_file(flat, str(tmp / WEIGHTS))
        (tmp / META).write_text(text, encoding="utf-8")

    atomic_build(directory, write, {"kind": "checkpoint"}, replace_only=META)
    return directory


def load_checkpoint(directory) -> tuple[dict, dict, dict]:
    """Read a checkpoint written by `save_checkpoint`: (tensors, config, state). A save cut
    off by a crash is repaired first (`recover_interrupted_swap`); files that do not match
    the checkpoint's manifest are refused (ValueError) instead of loaded half."""
    from ..lm.cache import MANIFEST, recover_interrupted_swap, verify_artifact

    directory = Path(directory)
    recover_interrupted_swap(directory)
    if not (directory / WEIGHTS).exists() or not (directory / META).exists():
        raise ValueError(f"no checkpoint in {directory} (expected {WEIGHTS} and {META})")
    if (directory / MANIFEST).exists() and not verify_artifact(directory):
        raise ValueError(f"the checkpoint in {directory} is damaged: its files do not match "
                         f"their SHA-256 sums in {MANIFEST}")
    tensors = load_file(str(directory / WEIGHTS))
    meta = json.loads((directory / META).read_text(encoding="utf-8"))
    return tensors, meta.get("config", {}), meta.get("state", {})


def optimizer_tensors(optimizer: torch.optim.Optimizer, prefix: str = "optim.") -> dict:
    """An optimizer's per-parameter state (e.g. Adam's moments and step) as named tensors."""
    out = {}
    for idx, st in optimizer.state_dict()["state"].items():
        for key, value in st.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(float(value))
            out[f"{prefix}{idx}.{key}"] = t
    return out


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: dict,
                           prefix: str = "optim.") -> None:
    """Inverse of `optimizer_tensors`: restore the per-parameter state in place."""
    sd = optimizer.state_dict()
    state: dict = {}
    for name, value in tensors.items():
        if not name.startswith(prefix):
            continue
        idx, key = name[len(prefix):].split(".", 1)
        state.setdefault(int(idx), {})[key] = value.clone()
    sd["state"] = state
    optimizer.load_state_dict(sd)
