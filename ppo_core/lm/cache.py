"""The model cache: a lock per artefact, builds written to a temporary folder and renamed into
place, and a manifest of SHA-256 sums that tells a complete build from a broken one (ch. 04).

Every cached model of the course (the tiny GPT-2, GPT-2 small's shape, the reward models) is
built through `cached_build`; RLHF checkpoints are written through `atomic_build`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from .._runtime import torch_threads

__all__ = ["cache_lock", "verify_artifact", "atomic_build", "recover_interrupted_swap",
           "cached_build", "spec_key"]


MANIFEST = "ppo_course_manifest.json"
_MANIFEST = MANIFEST


@contextlib.contextmanager
def cache_lock(name: str, timeout: float = 1800.0):
    """Exclusive lock `cache_dir()/name.lock` so that two processes never build the same
    artefact at once (the second waits, then finds it built). POSIX `fcntl.flock`; where
    that is missing (Windows) an `O_EXCL` lock file with a stale-lock timeout."""
    from .. import cache_dir

    lock_path = cache_dir() / f"{name}.lock"
    try:
        import fcntl
    except ImportError:                                   # pragma: no cover - Windows
        fcntl = None
    if fcntl is not None:
        with open(lock_path, "a+") as fh:
            start, told = time.time(), False
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not told:
                        print(f"another process is building {name}; waiting for it",
                              flush=True)
                        told = True
                    if time.time() - start > timeout:
                        raise TimeoutError(f"waited {timeout:.0f} s for {lock_path}") from None
                    time.sleep(0.5)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    else:                                                 # pragma: no cover - Windows
        start = time.time()
        while True:
            try:
                fd = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.close(fd)
                break
            except FileExistsError:
                if time.time() - os.path.getmtime(lock_path) > timeout:
                    os.unlink(lock_path)
                    continue
                time.sleep(0.5)
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock_path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_manifest(directory: Path, info: dict) -> None:
    files = {p.name: _sha256(p) for p in sorted(directory.iterdir())
             if p.is_file() and p.name != _MANIFEST}
    (directory / _MANIFEST).write_text(json.dumps({"files": files, **info}, indent=1))


def verify_artifact(directory) -> bool:
    """True if `directory` holds a complete build: its manifest exists and every file it
    lists is present with the recorded SHA-256 (a truncated or edited file fails)."""
    directory = Path(directory)
    man = directory / _MANIFEST
    try:
        files = json.loads(man.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not files:
        return False
    for name, digest in files.items():
        p = directory / name
        if not p.is_file() or _sha256(p) != digest:
            return False
    return True


def _siblings(final: Path, kind: str) -> list[Path]:
    """`.NAME.tmp-*` (new builds) or `.NAME.old-*` (swapped-out copies) beside `final`,
    newest first (their names end in the pid and the time in ms)."""
    def stamp(p: Path) -> int:
        try:
            return int(p.name.rsplit("-", 1)[1])
        except (IndexError, ValueError):
            return 0
    return sorted(final.parent.glob(f".{final.name}.{kind}-*"), key=stamp, reverse=True)


def _sibling(final: Path, kind: str) -> Path:
    return final.parent / f".{final.name}.{kind}-{os.getpid()}-{int(time.time() * 1000)}"


def recover_interrupted_swap(final) -> bool:
    """Put a complete copy back at `final` if a save was cut off between its two renames.

    `atomic_build` renames the old `final` to `.NAME.old-*`, then the new build `.NAME.tmp-*`
    to `final`. A crash (SIGKILL, power) between the two leaves no `final` but a complete
    new build and the old copy: this renames the newest complete one (verified against its
    manifest, the new build first) into place. Afterwards, with `final` present, swapped-out
    copies are deleted. Unfinished builds (no valid manifest) are left alone: another process
    may be writing them; `atomic_build` removes those under its lock. Readers and savers call
    this first. Returns True if it restored a copy."""
    final = Path(final)
    restored = False
    if not final.exists() and final.parent.is_dir():
        for cand in _siblings(final, "tmp") + _siblings(final, "old"):
            if not verify_artifact(cand):
                continue
            try:
                os.replace(cand, final)
                restored = True
            except OSError:                             # another reader restored it first
                pass
            break
    if final.exists():
        for old in _siblings(final, "old"):
            shutil.rmtree(old, ignore_errors=True)
    return restored


def _swap_into_place(tmp: Path, final: Path) -> None:
    """`final` ← `tmp` in two renames (old → `.NAME.old-*`, new → `final`), then delete the
    old copy. An exception between the renames (Ctrl-C) puts the old one back; a crash is
    repaired by the next `recover_interrupted_swap`."""
    old = None
    if final.exists():
        old = _sibling(final, "old")
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except FileNotFoundError:
        if tmp.exists() or not final.exists():
            raise                                 # else a reader restored this very build
    except BaseException:
        if old is not None and not final.exists() and old.exists():
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _refuse_foreign_files(final: Path, marker: str) -> None:
    """ValueError unless every entry of the folder `final` belongs to a checkpoint that holds
    `marker`: the files its manifest lists (all but the marker and the manifest itself, for a
    checkpoint written before manifests), so that swapping it away deletes nothing else."""
    entries = {p.name for p in final.iterdir()}
    if not entries:
        return
    if marker not in entries:
        raise ValueError(f"{str(final)!r} is not empty and holds no {marker}; refusing to "
                         f"replace what it holds (choose an empty or new folder)")
    try:
        known = set(json.loads((final / MANIFEST).read_text())["files"]) | {MANIFEST}
    except (OSError, ValueError, KeyError, TypeError):
        return                                    # an older checkpoint: its own files only
    foreign = sorted(entries - known)
    if foreign:
        raise ValueError(f"{str(final)!r} holds files that are not part of its checkpoint "
                         f"({', '.join(foreign[:5])}); refusing to replace them: move them "
                         f"elsewhere or save to another folder")


def atomic_build(final: Path, build_fn, info: dict, replace_only: str | None = None) -> Path:
    """Run `build_fn(tmp_dir)` in a temporary sibling of `final`, write the manifest, then
    swap it into place, so that `final` is always the old complete copy or the new one, never
    a mix and never nothing: an exception anywhere (a failing build, Ctrl-C during the swap)
    leaves the old copy (or, once renamed, the new one) at `final`; a crash between the two
    renames is repaired by the next reader or saver (`recover_interrupted_swap`).

    `replace_only`: a file name that an existing `final` must hold to be replaced (a
    checkpoint's marker): a folder holding anything else is refused with a ValueError rather
    than swapped away. None (the cache): an existing `final`, corrupt or not, is replaced.
    Call under `cache_lock` when several processes may build the same `final`."""
    final = Path(final)
    recover_interrupted_swap(final)
    if final.exists() and not final.is_dir():
        raise ValueError(f"{str(final)!r} is a file, not a folder")
    if replace_only is not None and final.is_dir():
        _refuse_foreign_files(final, replace_only)
    for stale in _siblings(final, "tmp"):                # unfinished builds of killed runs
        shutil.rmtree(stale, ignore_errors=True)
    tmp = _sibling(final, "tmp")
    tmp.mkdir(parents=True)
    try:
        build_fn(tmp)
        _write_manifest(tmp, info)
        _swap_into_place(tmp, final)
    finally:
        if not final.exists():                           # interrupted mid-swap
            recover_interrupted_swap(final)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def spec_key(spec) -> str:
    """Ten hex digits of the SHA-256 of a spec dataclass's fields: the cache directory name."""
    blob = json.dumps(asdict(spec), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def _build_threads(most: int = 2) -> int:
    """Threads for the builds: `$PPO_COURSE_BUILD_THREADS`, else 1 on a busy machine
    (1-minute load average ≥ 1) and otherwise the cores this process may use, at most
    `most` (2 for the small models, whose matrices gain nothing from more)."""
    env = os.environ.get("PPO_COURSE_BUILD_THREADS", "auto")
    if env != "auto":
        return max(1, int(env))
    try:
        busy = os.getloadavg()[0] >= 1.0
    except (AttributeError, OSError):                    # pragma: no cover - Windows
        busy = True
    try:
        cores = len(os.sched_getaffinity(0))             # honours taskset / cgroup cpusets
    except AttributeError:                               # pragma: no cover - macOS, Windows
        cores = os.cpu_count() or 1
    return 1 if busy else max(1, min(most, cores))


@contextlib.contextmanager
def _own_random_state():
    """Run a build on its own random numbers: torch's (CPU and every CUDA device), Python's
    `random` and numpy's global states are saved before and restored after, so that a seeded
    run draws the same numbers whether or not it first had to build the cache."""
    import random

    import numpy as np
    import torch

    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def cached_build(name: str, builder, rebuild: bool = False, threads: int | None = None,
                 lock_timeout: float = 1800.0, announce=None) -> Path:
    """`cache_dir()/name`, built when it is missing or corrupt (or `rebuild`): under
    `cache_lock`, `builder(tmp_dir)` writes the artefact into a temporary folder and returns
    the facts for its manifest, then `atomic_build` renames it into place. The build runs on
    `threads` torch threads (None: `_build_threads()`); `announce(final)` is called just
    before it starts. Every cached model of the course (tiny GPT-2, GPT-2 small's shape,
    reward models) goes through here. The build draws on its own random state
    (`_own_random_state`): the caller's seeded random numbers are the same afterwards whether
    or not the artefact had to be built."""
    from .. import cache_dir

    final = cache_dir() / name
    if not rebuild and verify_artifact(final):
        return final
    with cache_lock(name, timeout=lock_timeout):            # no build can be mid-swap now
        recover_interrupted_swap(final)
        if not rebuild and verify_artifact(final):           # another process built it
            return final
        if announce is not None:
            announce(final)
        info: dict = {}

        def build(tmp):
            with torch_threads(threads or _build_threads()), _own_random_state():
                info.update(builder(tmp))
        atomic_build(final, build, info)
    return final



def manifest_files(directory, marker: str) -> set[str]:
    """The files of a build in `directory` as its manifest lists them (the manifest included),
    if the manifest lists `marker` (the file that says what kind of build it is); else the
    empty set. Used to tell a trainer's own checkpoint from a folder of other files."""
    d = Path(directory)
    try:
        listed = json.loads((d / _MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    return (set(listed) | {_MANIFEST}) if marker in listed else set()
