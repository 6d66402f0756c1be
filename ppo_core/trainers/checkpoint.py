"""Checkpoints: tensors in a safetensors file, everything else in a JSON file (chapter 03).

A checkpoint is a directory:

    DIR/weights.safetensors   named tensors (model weights, optimizer moments, RNG state)
    DIR/checkpoint.json       {"config": {...}, "state": {...}}: plain JSON, no pickle

Nothing is unpickled when loading, so a checkpoint from someone else cannot run code.
Both files are written to a temporary name and then renamed, so an interrupted save
(KeyboardInterrupt in a notebook) leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
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
    """
    if not isinstance(tensors, dict) or not tensors:
        raise ValueError(f"tensors must be a non-empty dict of name -> tensor, got {type(tensors).__name__}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {"config": config, "state": state or {}}
    tmp_w = directory / (WEIGHTS + ".tmp")
    tmp_m = directory / (META + ".tmp")
    save_file(flat, str(tmp_w))
    tmp_m.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    os.replace(tmp_w, directory / WEIGHTS)          # atomic on POSIX and Windows
    os.replace(tmp_m, directory / META)
    return directory


def load_checkpoint(directory) -> tuple[dict, dict, dict]:
    """Read a checkpoint written by `save_checkpoint`: (tensors, config, state)."""
    directory = Path(directory)
    if not (directory / WEIGHTS).exists() or not (directory / META).exists():
        raise ValueError(f"no checkpoint in {directory} (expected {WEIGHTS} and {META})")
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
