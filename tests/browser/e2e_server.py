"""A throw-away JupyterLab for the browser tests, and a watcher for kernel errors.

`run_jupyter_lab(notebooks)` starts `sys.executable -m jupyter lab` (the project's own
environment) on a free loopback port with a random token, in a temporary directory holding
copies of the notebooks (JupyterLab autosaves: the repository's notebooks are never opened),
with temporary Jupyter config, data, runtime, IPython and settings directories, so nothing of
the user's is read or written. Whatever happens it stops every kernel and the server, kills
the process group, and removes the temporary directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SCREENSHOTS = Path(os.environ.get("PPO_COURSE_SCREENSHOTS", HERE / "screenshots"))


# --------------------------------------------------------------------------- JupyterLab server

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class JupyterLab:
    """A running JupyterLab: where it listens, its token, and the directory it serves."""
    port: int
    token: str
    root: Path
    log: Path
    process: subprocess.Popen = field(repr=False)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base}/lab/tree/{path}?token={self.token}"

    def api(self, path: str, method: str = "GET", timeout: float = 10.0):
        """Call the server's REST API; returns the decoded JSON (None for an empty body)."""
        req = urllib.request.Request(f"{self.base}/api/{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def kernels(self) -> list[dict]:
        return self.api("kernels")

    def wait_kernels_idle(self, timeout: float, settle: float = 3.0) -> None:
        """Wait until every kernel has been idle (no execution) for `settle` seconds."""
        deadline = time.monotonic() + timeout
        idle_since = None
        while time.monotonic() < deadline:
            ks = self.kernels()
            if ks and all(k["execution_state"] == "idle" for k in ks):
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= settle:
                    return
            else:
                idle_since = None
            time.sleep(0.5)
        raise AssertionError(f"kernels still busy after {timeout:.0f} s: {self.kernels()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def _write_settings(settings: Path) -> None:
    """User settings for the throw-away JupyterLab: every cell kept in the page (so that
    screenshots and prompts are real), no news or update checks (the network is closed)."""
    files = {
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
            "fetchNews": "false", "checkForUpdates": False},
    }
    for rel, value in files.items():
        path = settings / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))


def _kill_leftovers(marker: str) -> None:
    """SIGKILL any process still running whose command line names `marker`, our temporary
    directory (the server is started in it, kernels read their connection file from it)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            with contextlib.suppress(OSError):
                os.kill(int(proc.name), signal.SIGKILL)


def _die_with_parent() -> None:
    """In the child before exec (Linux): get SIGTERM when the test process dies, even by
    SIGKILL, so that no JupyterLab outlives its test. Its kernels follow their server."""
    with contextlib.suppress(Exception):
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _interrupt_on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def run_jupyter_lab(notebooks: list[Path], startup_timeout: float = 120.0):
    """Start JupyterLab serving copies of `notebooks`; always stop it and remove its files."""
    tmp = Path(tempfile.mkdtemp(prefix="ppo-course-jlab-"))
    root, runtime = tmp / "root", tmp / "runtime"
    for d in (root, runtime, tmp / "config", tmp / "data", tmp / "ipython"):
        d.mkdir()
    for nb in notebooks:
        shutil.copy2(nb, root / nb.name)
    _write_settings(tmp / "settings")
    port, token = _free_port(), secrets.token_hex(24)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_DATA_DIR=str(tmp / "data"),
               JUPYTER_RUNTIME_DIR=str(runtime), IPYTHONDIR=str(tmp / "ipython"),
               JUPYTER_PLATFORM_DIRS="1", PYTHONUNBUFFERED="1")
    # A learner's kernel draws inline; the test command's MPLBACKEND=Agg would hide every plot.
    env.pop("MPLBACKEND", None)
    env.pop("JUPYTER_TOKEN", None)
    # The kernel must import the repository's ppo_core even if it was not pip-installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--ServerApp.terminals_enabled=False",
           f"--LabApp.user_settings_dir={tmp / 'settings'}",
           f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = tmp / "jupyter.log"
    lab = None
    with open(log, "wb") as log_fh:
        process = subprocess.Popen(cmd, cwd=root, env=env, stdout=log_fh,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True,
                                   preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    # a test run stopped by SIGTERM (a CI timeout) still reaches the `finally` below
    old_handler = None
    if threading.current_thread() is threading.main_thread():
        old_handler = signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    try:
        lab = JupyterLab(port=port, token=token, root=root, log=log, process=process)
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {process.returncode}:\n{lab.log_tail()}")
            try:
                lab.api("status", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab not up after {startup_timeout:.0f} s:\n"
                                       f"{lab.log_tail()}")
                time.sleep(0.5)
        yield lab
    finally:
        # 1) ask politely: stop every kernel, then the server; 2) signal the process group;
        # 3) kill whatever still names our runtime directory; 4) remove the temporary tree.
        with contextlib.suppress(Exception):
            if lab is not None and process.poll() is None:
                for k in lab.kernels():
                    lab.api(f"kernels/{k['id']}", method="DELETE", timeout=15)
                lab.api("shutdown", method="POST", timeout=10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        _kill_leftovers(str(tmp))
        if os.environ.get("PPO_COURSE_BROWSER_KEEP_LOG"):
            with contextlib.suppress(OSError):
                SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                shutil.copy2(log, SCREENSHOTS / "jupyter.log")
        shutil.rmtree(tmp, ignore_errors=True)
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)


# --------------------------------------------------------------------------- kernel errors

class KernelMessages:
    """Collects kernel errors seen on the page's websockets: an `error` message, or a stream
    carrying a traceback (e.g. from a button callback, which JupyterLab would only show in
    its log console, not in any cell)."""

    _ERROR = re.compile(rb'"msg_type"\s*:\s*"error"')
    _TRACEBACK = b"Traceback (most recent call last)"

    def __init__(self):
        self.errors: list[str] = []

    def attach(self, page) -> None:
        page.on("websocket", self._on_websocket)

    def _on_websocket(self, ws) -> None:
        if "/api/kernels/" in ws.url:
            ws.on("framereceived", self._on_frame)

    def _on_frame(self, payload) -> None:
        data = payload if isinstance(payload, bytes) else str(payload).encode()
        if self._ERROR.search(data) or self._TRACEBACK in data:
            self.errors.append(self._summary(data.decode(errors="replace")))

    @staticmethod
    def _summary(text: str) -> str:
        """`ename: evalue` of an error message, else the traceback of a stream."""
        field = r'"{}":\s*"((?:[^"\\]|\\.)*)"'
        ename, evalue = (re.search(field.format(k), text) for k in ("ename", "evalue"))
        if ename:
            return f"{ename.group(1)}: {evalue.group(1) if evalue else ''}"
        i = text.find("Traceback (most recent call last)")
        return text[max(i, 0):][:2000]

    def clear(self) -> None:
        self.errors.clear()


