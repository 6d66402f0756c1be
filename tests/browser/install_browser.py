#!/usr/bin/env python3
"""Install what the browser tests need: Debian's Chromium and the Playwright Python package.

    python tests/browser/install_browser.py      # with the interpreter that runs the tests

* Chromium: `/usr/bin/chromium` if it is already there; otherwise, as root on a machine
  with apt, `apt-get install chromium` (Debian's package; Playwright's own browser download
  is not used, it cannot be fetched on machines whose only network is a package registry).
* Playwright: `pip install playwright==PLAYWRIGHT_VERSION` into this interpreter's
  environment, unless it imports already. Only the Python package: no `playwright install`.

Exits 0 when both are usable, 1 with a one-line reason on the last line otherwise; the tests
skip with that reason.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

PLAYWRIGHT_VERSION = "1.65.2"
CHROMIUM = os.environ.get("PPO_COURSE_CHROMIUM", "/usr/bin/chromium")


def _run(cmd: list[str], timeout: float) -> int:
    print("+", " ".join(cmd), flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        return subprocess.run(cmd, env=env, timeout=timeout).returncode
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"  failed: {exc}", flush=True)
        return 1


def install_chromium() -> str | None:
    """Return None when Chromium is usable, else the reason it is not."""
    if os.access(CHROMIUM, os.X_OK):
        return None
    if not (hasattr(os, "geteuid") and os.geteuid() == 0):
        return f"no Chromium at {CHROMIUM} and not root, so apt-get cannot install it"
    apt = shutil.which("apt-get")
    if apt is None:
        return f"no Chromium at {CHROMIUM} and no apt-get to install it"
    if _run([apt, "update", "-q"], timeout=300) != 0:
        return "apt-get update failed (offline?)"
    if _run([apt, "install", "-y", "-q", "--no-install-recommends", "chromium"], timeout=600) != 0:
        return "apt-get install chromium failed"
    if not os.access(CHROMIUM, os.X_OK):
        return f"apt-get installed chromium but {CHROMIUM} is missing"
    return None


def install_playwright() -> str | None:
    """Return None when `playwright` imports in this interpreter, else the reason."""
    if importlib.util.find_spec("playwright") is not None:
        return None
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
           f"playwright=={PLAYWRIGHT_VERSION}"]
    if _run(cmd, timeout=600) != 0:
        return f"pip install playwright=={PLAYWRIGHT_VERSION} failed (offline?)"
    importlib.invalidate_caches()
    if importlib.util.find_spec("playwright") is None:
        return "playwright installed but does not import"
    return None


def main() -> int:
    for step in (install_chromium, install_playwright):
        reason = step()
        if reason:
            print(reason, flush=True)
            return 1
    print(f"ready: {CHROMIUM} and playwright in {sys.prefix}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
