"""Where torch runs (the device, how many CPU threads) and how quietly models load. Shared by
every trainer."""

from __future__ import annotations

import contextlib


def resolve_device(device=None, check: bool = False):
    """`torch.device(device)`, or CUDA when available and `device` is None, else the CPU.

    With `check`, a device that cannot be used here (a malformed name, CUDA without a GPU,
    an index past the last GPU) raises a ValueError saying so, instead of failing later."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r} ({e})") from None
    if check and dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available on this machine "
                             f"(use --device cpu, or leave it out)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} GPU(s) here")
    elif check and dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    return dev


@contextlib.contextmanager
def torch_threads(n: int = 1):
    """Run the body with `torch.set_num_threads(n)`, then restore. One thread is the default
    for the course's small models: on a shared two-core machine two OpenMP threads of such
    small matrices spin against each other and run up to 10× slower than one."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def quiet_loading():
    """Load a model from a local folder without transformers' "Loading weights" and
    "Writing model shards" progress bars: the course's models load in well under a second,
    and a bar per load fills notebooks and widget outputs with noise. It also silences
    huggingface_hub's download bars (transformers switches both), so use it only for
    local folders."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
