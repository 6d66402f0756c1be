"""Set up the course's environment, then open it, test it or build its website. Standard
library only.

    python3 -m ppo_core.course lab     # make .venv, install pinned requirements, open JupyterLab
    python3 -m ppo_core.course test    # make .venv, install, run unit tests + nbval on every notebook
    python3 -m ppo_core.course book    # make .venv, install, build the website into build/book/html

Runs with any Python >= 3.10 before anything is installed: it creates `.venv` in the
repository, installs `requirements.txt` and `ppo_core` (editable) into it (`test` and `book`
also `requirements-book.txt`, the website's Sphinx stack), and then runs the real work with
the virtual environment's interpreter. A stamp file records what was installed, so a second
call starts at once unless a requirements file or pyproject.toml changed. Extra arguments go
to JupyterLab, pytest or the site build (`--fresh`: execute every notebook again), e.g.
`test tests/test_losses.py`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("PPO_COURSE_VENV", ROOT / ".venv"))
STAMP = VENV / ".ppo_course_installed"


def _venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


#: what `lab` needs; `test` and `book` add the website's requirements
BASE = ("requirements.txt",)
WITH_BOOK = ("requirements.txt", "requirements-book.txt")
#: the environment of the test command (offline; one build thread, so the cached models come
#: out the same whatever else the machine runs), which the website build shares
TEST_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0", "PPO_COURSE_BUILD_THREADS": "1"}


def _fingerprint(requirements) -> str:
    h = hashlib.sha256()
    for name in (*requirements, "pyproject.toml"):
        h.update(name.encode())
        h.update((ROOT / name).read_bytes())
    h.update(sys.version.encode())
    return h.hexdigest()


def _installed() -> set:
    """Fingerprints of what the stamp says was installed (one per line)."""
    return set(STAMP.read_text().split()) if STAMP.exists() else set()


def _run(cmd, **kw) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def ensure_env(requirements=BASE) -> Path:
    """Create `.venv` and install the pinned `requirements` files unless already up to date."""
    if sys.version_info < (3, 10):
        sys.exit(f"Python >= 3.10 is needed, this is {sys.version.split()[0]}")
    py = _venv_python()
    if not py.exists():
        print(f"Creating a virtual environment in {VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    fingerprint = _fingerprint(requirements)
    done = _installed()
    if fingerprint in done:
        return py
    print("Installing the pinned requirements (about a minute the first time) ...", flush=True)
    pip = [py, "-m", "pip", "--disable-pip-version-check"]
    _run(pip + ["install", "-q", "--upgrade", "pip"])
    files = [x for name in requirements for x in ("-r", ROOT / name)]
    _run(pip + ["install", "-q", *files])
    _run(pip + ["install", "-q", "--no-deps", "-e", ROOT])
    # what is installed now: these files, and any set they include (WITH_BOOK covers BASE)
    valid = {_fingerprint(r) for r in (BASE, WITH_BOOK)}
    covered = {_fingerprint(r) for r in (BASE, WITH_BOOK) if set(r) <= set(requirements)}
    STAMP.write_text("\n".join(sorted((done & valid) | covered)) + "\n")
    return py


LAB_SETTINGS = {
    # no "Would you like to get notified about official Jupyter news?" toast over chapter 01
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false",
                                                    "checkForUpdates": False},
}


def _lab_settings() -> None:
    """JupyterLab settings overrides for the course's environment (its own share/ folder,
    so nothing of the user's JupyterLab elsewhere changes)."""
    import json

    folder = VENV / "share" / "jupyter" / "lab" / "settings"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "overrides.json").write_text(json.dumps(LAB_SETTINGS, indent=1))


def lab(args) -> int:
    py = ensure_env()
    _lab_settings()
    cmd = [py, "-m", "jupyter", "lab", f"--ServerApp.root_dir={ROOT}",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    args = list(args)
    if not any(a.endswith(".ipynb") or (ROOT / a).is_dir() for a in args):   # no notebook named
        # the URL JupyterLab prints (and opens) is chapter 01's, not the start page
        cmd.append("--LabApp.default_url=/lab/tree/chapters/01_bandits_and_policy_gradients.ipynb")
    cmd += args
    print("+", " ".join(map(str, cmd)), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=ROOT)


def test(args) -> int:
    py = ensure_env(WITH_BOOK)
    # one build thread: the cached models come out the same whatever else the machine runs
    env = dict(os.environ, **TEST_ENV)
    # with no arguments: every unit test and every notebook; otherwise pytest's own arguments
    targets = list(args) or ["tests", "chapters", "exercises"]
    cmd = [py, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "--durations=15",
           "-p", "no:cacheprovider", *targets]
    print("+", " ".join(map(str, cmd)), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, env=env)


def book(args) -> int:
    """Build the website (`ppo_core.course.book`) in the test command's mode."""
    py = ensure_env(WITH_BOOK)
    cmd = [py, "-m", "ppo_core.course.book", *args]
    print("+", " ".join(map(str, cmd)), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, env=dict(os.environ, **TEST_ENV))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("lab", "test", "book", "setup"):
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "setup":
        ensure_env(WITH_BOOK)
        return 0
    return {"lab": lab, "test": test, "book": book}[command](rest)


if __name__ == "__main__":
    sys.exit(main())
