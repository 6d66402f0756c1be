"""Set up the course's environment, then open it or test it. Standard library only.

    python3 -m ppo_core.course lab     # make .venv, install pinned requirements, open JupyterLab
    python3 -m ppo_core.course test    # make .venv, install, run unit tests + nbval on every notebook

Runs with any Python >= 3.10 before anything is installed: it creates `.venv` in the
repository, installs `requirements.txt` and `ppo_core` (editable) into it, and then runs
the real work with the virtual environment's interpreter. A stamp file records what was
installed, so a second call starts at once unless requirements.txt or pyproject.toml
changed. Extra arguments go to JupyterLab or pytest, e.g. `test tests/test_losses.py`.
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


def _fingerprint() -> str:
    h = hashlib.sha256()
    for name in ("requirements.txt", "pyproject.toml"):
        h.update((ROOT / name).read_bytes())
    h.update(sys.version.encode())
    return h.hexdigest()


def _run(cmd, **kw) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def ensure_env() -> Path:
    """Create `.venv` and install the pinned requirements unless already up to date."""
    if sys.version_info < (3, 10):
        sys.exit(f"Python >= 3.10 is needed, this is {sys.version.split()[0]}")
    py = _venv_python()
    if not py.exists():
        print(f"Creating a virtual environment in {VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    fingerprint = _fingerprint()
    if STAMP.exists() and STAMP.read_text() == fingerprint:
        return py
    print("Installing the pinned requirements (about a minute the first time) ...", flush=True)
    pip = [py, "-m", "pip", "--disable-pip-version-check"]
    _run(pip + ["install", "-q", "--upgrade", "pip"])
    _run(pip + ["install", "-q", "-r", ROOT / "requirements.txt"])
    _run(pip + ["install", "-q", "--no-deps", "-e", ROOT])
    STAMP.write_text(fingerprint)
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
    py = ensure_env()
    # one build thread: the cached models come out the same whatever else the machine runs
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               MPLBACKEND="Agg", PYTHONHASHSEED="0", PPO_COURSE_BUILD_THREADS="1")
    # with no arguments: every unit test and every notebook; otherwise pytest's own arguments
    targets = list(args) or ["tests", "chapters", "exercises"]
    cmd = [py, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "--durations=15",
           "-p", "no:cacheprovider", *targets]
    print("+", " ".join(map(str, cmd)), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, env=env)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("lab", "test", "setup"):
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "setup":
        ensure_env()
        return 0
    return lab(rest) if command == "lab" else test(rest)


if __name__ == "__main__":
    sys.exit(main())
