"""Fixtures for the end-to-end browser tests: Playwright driving Debian's headless Chromium.

* `playwright_sync` installs what is missing (install_browser.py: Debian's `chromium`,
  the `playwright` Python package; Playwright's own browser download cannot be fetched on
  these machines) and returns `playwright.sync_api`.
* `browser_page` is a fresh page of `/usr/bin/chromium` with a new, empty profile; kernel
  errors seen on its websockets are collected in `page.kernel_messages`.

The JupyterLab the pages talk to is started per test by `e2e_server.run_jupyter_lab`.
The tests run by default (about three minutes with the install, see the README); they are
skipped, with the reason, when `PPO_COURSE_BROWSER=0` or when no browser can be installed
(not root and no Chromium, no apt, offline).
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from e2e_server import KernelMessages

HERE = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("PPO_COURSE_CHROMIUM", "/usr/bin/chromium")
# Flags that work on machines with a closed network (no Google lookups, no background fetches).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]
#: "0" skips the browser tests, "1" runs them when a browser can be installed
SWITCH = "PPO_COURSE_BROWSER"
#: what an unset SWITCH means: run by the test command (install + tests took ~3.5 min here)
DEFAULT = "1"


def _wanted() -> bool:
    return os.environ.get(SWITCH, DEFAULT).strip().lower() not in ("0", "false", "no", "off")


# --------------------------------------------------------------------------- browser install

@pytest.fixture(scope="session")
def playwright_sync():
    """The `playwright.sync_api` module, after installing Chromium and Playwright if needed.

    Skips (never fails) when switched off or when nothing can be installed."""
    if not _wanted():
        pytest.skip(f"browser tests switched off ({SWITCH}=0; set {SWITCH}=1 to run them)")
    try:
        importlib.import_module("playwright.sync_api")
        have_pw = True
    except ImportError:
        have_pw = False
    if not (have_pw and os.access(CHROMIUM, os.X_OK)):
        try:
            proc = subprocess.run([sys.executable, str(HERE / "install_browser.py")],
                                  capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            pytest.skip("no browser could be installed: install_browser.py took over 15 min")
        if proc.returncode != 0:
            lines = (proc.stdout + proc.stderr).strip().splitlines() or ["(no output)"]
            pytest.skip(f"no browser could be installed: {lines[-1]}")
        importlib.invalidate_caches()
    try:
        return importlib.import_module("playwright.sync_api")
    except ImportError as exc:  # pragma: no cover - install said yes but import fails
        pytest.skip(f"playwright not importable after install: {exc}")


@pytest.fixture(scope="module")
def browser_context(playwright_sync):
    """A persistent Chromium context with a new, empty profile directory (removed after).
    Module-scoped, so Chromium is closed as soon as the browser tests are done instead of
    idling through the rest of the suite."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM}")
    profile = tempfile.mkdtemp(prefix="ppo-course-chromium-")
    try:
        with playwright_sync.sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1280, "height": 1000}, device_scale_factor=1)
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser_page(browser_context):
    """A fresh page; kernel errors seen on its websockets are in `page.kernel_messages`,
    uncaught page errors in `page.page_errors`."""
    page = browser_context.new_page()
    page.set_default_timeout(60_000)
    page.kernel_messages = KernelMessages()
    page.kernel_messages.attach(page)
    page.page_errors = []
    page.on("pageerror", lambda exc: page.page_errors.append(str(exc)))
    try:
        yield page
    finally:
        page.close()
