"""Data-parallel training across processes: the plumbing, in one place (RLHF beyond one device).

Each process (a *rank*) runs the same trainer on its own share of the batch; gradients are
averaged by `torch.nn.parallel.DistributedDataParallel` (DDP), and the statistics that the
trainer logs or acts on are reduced here so that every rank sees the same numbers:

    world = init(device, timeout_s)          # from torchrun's RANK, WORLD_SIZE, LOCAL_RANK
    model = world.wrap(policy)               # DDP on several ranks, `policy` itself on one
    means, n = world.weighted_mean({"kl": kl}, weight=B)   # Σ_r w_r x_r / Σ_r w_r, Σ_r w_r
    world.reduce({"iteration_s": dt}, "max")
    stop = world.any(approx_kl > target_kl)  # one decision for all ranks, or DDP hangs
    world.shutdown(barrier=True)             # barrier, destroy the process group
                                             # (drop the DDP wrapper first)

With one process (no torchrun, or `WORLD_SIZE=1`) there is no process group: `wrap` returns
the model, every reduction returns its input unchanged, so single-process training is
exactly what it was. The backend is chosen from the device: `nccl` on CUDA (rank r uses
`cuda:LOCAL_RANK`), `gloo` on the CPU.

`launch(n, argv)` re-runs `python -m ppo_core ARGV` in `n` processes through
`torch.distributed.run --standalone` (a free port on this machine), which is what
`python -m ppo_core rlhf --nproc N` does; `torchrun --standalone --nproc-per-node N -m
ppo_core -- rlhf ...` is the equivalent by hand (the `--` keeps torchrun's own parser off
the trainer's flags: it would claim `--log` as an ambiguous prefix of its `--log-dir`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch

__all__ = ["World", "init", "env_world_size", "launch"]

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def env_world_size() -> int:
    """WORLD_SIZE from the environment torchrun sets (1 when it is not set)."""
    return _env_int("WORLD_SIZE", 1)


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an int, got {text!r}") from None


@dataclass
class World:
    """This process's place among the ranks: `rank` in [0, `size`), `device` it trains on.

    `owns_group`: `init` created the process group, so `shutdown` destroys it."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes the log, shows the bar and checkpoints."""
        return self.rank == 0

    def wrap(self, model: torch.nn.Module, unused_parameters: bool = False) -> torch.nn.Module:
        """`model` in DDP on several ranks (rank 0's weights are broadcast to all), else
        `model`. Generate and score with the unwrapped module; train through this one.
        `unused_parameters`: some parameters get no gradient (the value head of a run
        without a critic); DDP then looks for them after each forward."""
        if self.size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False,
                                       find_unused_parameters=unused_parameters)

    def reduce(self, values: dict[str, float], op: str = "sum") -> dict[str, float]:
        """Element-wise `op` ("sum", "max", "min") of a dict of floats over the ranks, in
        float64, one collective for the whole dict. Every rank gets the same result."""
        if self.size == 1 or not values:
            return dict(values)
        import torch.distributed as dist

        ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
        if op not in ops:
            raise ValueError(f"op must be one of {sorted(ops)}, got {op!r}")
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64,
                         device=self.device)                             # (K,)
        dist.all_reduce(t, op=ops[op])
        return dict(zip(keys, t.tolist()))

    def weighted_mean(self, values: dict[str, float], weight: float) -> tuple[dict, float]:
        """(Σ_r w_r·x_r / Σ_r w_r for each x of `values`, Σ_r w_r): the mean over all ranks'
        samples when each rank's `values` are means over its `weight` samples. One process:
        `(values, weight)` unchanged."""
        if self.size == 1:
            return dict(values), weight
        sums = self.reduce({**{k: float(v) * weight for k, v in values.items()},
                            "\0weight": float(weight)}, "sum")
        total = sums.pop("\0weight")
        if total <= 0:
            raise ValueError(f"weighted_mean: the weights sum to {total} over the ranks")
        return {k: v / total for k, v in sums.items()}, total

    def any(self, flag: bool) -> bool:
        """True on every rank if `flag` is true on any: a decision all ranks take together
        (stopping an update early on one rank only would leave the others waiting in DDP)."""
        if self.size == 1:
            return bool(flag)
        return self.reduce({"flag": 1.0 if flag else 0.0}, "max")["flag"] > 0

    def masked_moments(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[float, float, int]:
        """(mean, unbiased variance, count) of `x[mask]` over all ranks' entries, two-pass
        (mean first, then Σ(x − mean)²). x, mask: `(B, T)`; mask bool."""
        x = x.detach()
        n_local = int(mask.sum())
        s = self.reduce({"sum": float(x[mask].double().sum()), "n": float(n_local)})
        n = int(s["n"])
        if n < 1:
            raise ValueError("masked_moments: the mask is empty on every rank")
        mean = s["sum"] / n
        sq = self.reduce({"sq": float(((x[mask].double() - mean) ** 2).sum())})["sq"]
        return mean, sq / max(n - 1, 1), n

    def shutdown(self, barrier: bool = True) -> None:
        """End this rank's part cleanly, then destroy the process group this `World` created
        (idempotent). Drop every DDP wrapper first: its reducer holds the group too.

        `barrier` (after a finished run): wait for the other ranks, then for gloo's worker
        thread to release that last collective. That thread needs the GIL to free tensors
        Python knows, while destroying the group joins it with the GIL held: destroying too
        early deadlocks, and leaving the group to interpreter exit can abort the process
        (pytorch#190489). Without `barrier` (after an error or an interrupt, when the others
        may never arrive) only a short pause lets the thread finish."""
        import gc
        import time

        import torch.distributed as dist

        if not (self.owns_group and dist.is_initialized()):
            return
        try:
            gc.collect()                                  # DDP wrappers nobody holds any more
            if barrier:
                t = torch.zeros(1, device=self.device)
                dist.all_reduce(t)                        # every rank has arrived
                deadline = time.monotonic() + 10.0
                while (self.device.type == "cpu" and t._use_count() > 1
                       and time.monotonic() < deadline):
                    time.sleep(0.001)                     # releases the GIL to gloo's thread
            else:
                time.sleep(0.2)
        finally:
            dist.destroy_process_group()
            self.owns_group = False
            sys.stdout.flush()
            sys.stderr.flush()


def init(device=None, timeout_s: float = 300.0) -> World:
    """The `World` of this process, from the variables torchrun sets (RANK, WORLD_SIZE,
    LOCAL_RANK); joins the process group when WORLD_SIZE > 1 (an existing one is reused).

    device: as `--device` (None: CUDA when available). On CUDA each rank takes
    `cuda:LOCAL_RANK` (an explicit index is refused with several ranks); backend `nccl`,
    else `gloo`. timeout_s: how long a rank waits for the others, at start-up and in
    every collective, before the job fails instead of hanging.
    """
    from .._runtime import resolve_device

    size = env_world_size()
    if size < 1:
        raise ValueError(f"WORLD_SIZE must be >= 1, got {size}")
    if size == 1:
        return World(device=resolve_device(device))
    missing = [k for k in _ENV if k not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={size} but {missing} not set: launch with torchrun "
                         f"(or `python -m ppo_core rlhf --nproc {size}`)")
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < size:
        raise ValueError(f"RANK must be in [0, WORLD_SIZE={size}), got {rank}")
    if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
        raise ValueError(f"timeout_s must be a number > 0, got {timeout_s!r}")
    dev = _rank_device(device, local_rank)
    import torch.distributed as dist

    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                timeout=timedelta(seconds=float(timeout_s)),
                                **({"device_id": dev} if dev.type == "cuda" else {}))
    elif dist.get_world_size() != size or dist.get_rank() != rank:
        raise ValueError(f"a process group is already initialised with rank "
                         f"{dist.get_rank()}/{dist.get_world_size()}, not {rank}/{size}")
    return World(rank, size, local_rank, dev, owns)


def _rank_device(device, local_rank: int) -> torch.device:
    """The device of rank `local_rank` on this machine: `cuda:LOCAL_RANK` or the CPU."""
    from .._runtime import resolve_device

    dev = resolve_device(device, check=True)
    if dev.type != "cuda":
        return dev
    if dev.index is not None:
        raise ValueError(f"device {str(device)!r}: with several processes each rank uses "
                         f"cuda:LOCAL_RANK; pass --device cuda (or leave it out)")
    if local_rank >= torch.cuda.device_count():
        raise ValueError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} GPU(s) "
                         f"here: start at most that many processes per machine")
    dev = torch.device("cuda", local_rank)
    torch.cuda.set_device(dev)
    return dev


def launch(nproc: int, argv: list[str], threads: int | None = None) -> int:
    """Run `python -m ppo_core ARGV` in `nproc` processes on this machine through
    `torch.distributed.run --standalone` (a free port, no rendezvous to set up) and wait.

    argv goes to the workers untouched (torchrun's parser never sees it). Each worker gets
    OMP_NUM_THREADS = `threads` (or 1) unless it is set. Returns the exit status: 0, that of
    the first rank that failed (its error is printed by the rank itself), or 130 when the
    launcher was interrupted (Ctrl-C, SIGTERM: torchrun passes the signal to every rank)."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc must be a positive int, got {nproc!r}")
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    os.environ.setdefault("OMP_NUM_THREADS", str(threads or 1))
    args = parse_args(["--standalone", "--nproc-per-node", str(nproc), "-m", "ppo_core"])
    args.training_script_args = list(argv)
    try:
        run(args)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        code = failure.exitcode if isinstance(failure.exitcode, int) else 1
        code = code if code > 0 else 128 - code          # killed by signal s: 128 + s
        print(f"error: rank {rank} of {nproc} failed with exit status {failure.exitcode} "
              f"(its message is above); the job was stopped", file=sys.stderr)
        return code
    except SignalException as e:              # Ctrl-C, kill: the ranks got it too and stopped
        print(f"interrupted by signal {int(e.sigval)}: the ranks were stopped", file=sys.stderr)
        return 130
    return 0
