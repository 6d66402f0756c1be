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

__all__ = ["cache_lock", "verify_artifact", "atomic_build", "cached_build", "spec_key"]


_MANIFEST = "ppo_course_manifest.json"


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


def atomic_build(final: Path, build_fn, info: dict) -> Path:
    """Run `build_fn(tmp_dir)` in a temporary sibling of `final`, write the manifest, then
    rename it into place (removing a corrupt `final` first). Call under `cache_lock`."""
    final = Path(final)
    for stale in final.parent.glob(f".{final.name}.tmp-*"):   # left by a killed build
        shutil.rmtree(stale, ignore_errors=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{int(time.time() * 1000)}"
    tmp.mkdir(parents=True)
    try:
        build_fn(tmp)
        _write_manifest(tmp, info)
        if final.exists():
            trash = final.parent / f".{final.name}.old-{os.getpid()}-{int(time.time() * 1000)}"
            os.replace(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp, final)
    finally:
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


def cached_build(name: str, builder, rebuild: bool = False, threads: int | None = None,
                 lock_timeout: float = 1800.0, announce=None) -> Path:
    """`cache_dir()/name`, built when it is missing or corrupt (or `rebuild`): under
    `cache_lock`, `builder(tmp_dir)` writes the artefact into a temporary folder and returns
    the facts for its manifest, then `atomic_build` renames it into place. The build runs on
    `threads` torch threads (None: `_build_threads()`); `announce(final)` is called just
    before it starts. Every cached model of the course (tiny GPT-2, GPT-2 small's shape,
    reward models) goes through here."""
    from .. import cache_dir

    final = cache_dir() / name
    if not rebuild and verify_artifact(final):
        return final
    with cache_lock(name, timeout=lock_timeout):
        if not rebuild and verify_artifact(final):           # another process built it
            return final
        if announce is not None:
            announce(final)
        info: dict = {}

        def build(tmp):
            with torch_threads(threads or _build_threads()):
                info.update(builder(tmp))
        atomic_build(final, build, info)
    return final

