"""The course as a learner sees it: JupyterLab in headless Chromium, labs that redraw.

For chapters 02 and 03 this opens the notebook in a throw-away JupyterLab (see conftest.py),
runs Run ▸ Run All Cells, waits for the kernel to go idle, and checks that

* every code cell ran (the saved notebook has an execution count on each) and no cell, no
  widget output and no button callback produced an error;
* every widget rendered (no "Loading widget...", no raw `VBox(children=...)` dump);
* moving each lab's ε and β sliders with the keyboard redraws its plot (the figure's image
  changes); in chapter 03's lab, after moving ε and β, one press of Run trains with those
  values (the run's label names them) and redraws.

Screenshots go to tests/browser/screenshots/. Run by the test command when a browser can be
installed (conftest.py; `PPO_COURSE_BROWSER=0` skips it); alone:
`python3 -m ppo_core.course test tests/browser`. With PPO_COURSE_UPDATE_DOCS=1 it also
refreshes the README's docs/lab-screenshot.png (chapter 03's lab after one Run).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass

import pytest

from e2e_server import REPO, SCREENSHOTS, run_jupyter_lab
from e2e_ui import NotebookUI

pytestmark = pytest.mark.browser

CHAPTERS = REPO / "chapters"
DOCS_SCREENSHOT = REPO / "docs" / "lab-screenshot.png"
EPS, BETA = r"ε|[Ee]ps|clip", r"β|[Bb]eta|KL"


@dataclass
class Lab:
    """A lab in a notebook: the call that shows it, its sliders to move, its Run button."""
    call: str
    sliders: tuple[str, ...] = ()
    button: str | None = None
    redraw_timeout: float = 180.0


def exercise_notebook(page, name: str, labs: list[Lab], run_all_timeout: float,
                      docs_shot: str | None = None) -> dict:
    """Open `name` from chapters/, Run All, then drive every lab; returns timings (s)."""
    assert (CHAPTERS / name).exists(), f"chapters/{name} is missing"
    timings = {}
    stem = name.removesuffix(".ipynb")
    with run_jupyter_lab([CHAPTERS / name]) as lab:
        ui = NotebookUI(page, lab, name, SCREENSHOTS)
        t0 = time.monotonic()
        ui.open()
        timings["open"] = time.monotonic() - t0
        timings["run_all"] = ui.run_all(timeout=run_all_timeout)
        page.screenshot(path=str(SCREENSHOTS / f"{stem}_after_run_all.png"))

        assert ui.dom_errors() == [], f"error outputs after Run All:\n{ui.dom_errors()}"
        assert ui.kernel_errors() == [], f"kernel errors: {ui.kernel_errors()[:3]}"
        assert ui.widget_failures() == [], f"widgets not rendered: {ui.widget_failures()}"
        assert page.locator(".jupyter-widgets").count() > 0, "no widget rendered at all"

        for spec in labs:
            key = spec.call.rstrip("(")
            cell = ui.code_cell(spec.call)
            ui.shot(cell, f"{stem}_{key}_before.png")
            moved = {}
            for label in spec.sliders:
                before = ui.images(cell)
                assert before or spec.button, f"{key}: no plot before moving /{label}/"
                slider = ui.slider(cell, label)
                name_shown = slider.locator(".widget-label").inner_text()
                t1 = time.monotonic()
                old, new = ui.move_slider(slider)
                moved[name_shown] = new
                if not spec.button:  # a lab without a Run button redraws on every change
                    after = ui.wait_redraw(cell, before, timeout=spec.redraw_timeout)
                    timings[f"{key} {name_shown}"] = time.monotonic() - t1
                    assert after != before, f"{key}: plot unchanged after {name_shown} {old} -> {new}"
            if spec.button:
                before = ui.images(cell)
                button = cell.locator("button.jupyter-button", has_text=spec.button)
                assert button.count() >= 1, f"{key}: no {spec.button!r} button"
                t1 = time.monotonic()
                button.first.click()
                ui.wait_redraw(cell, before, timeout=spec.redraw_timeout)
                timings[f"{key} {spec.button}"] = time.monotonic() - t1
                # the run used the values the learner set: its label names them ("ε=0.5, β=0.1")
                shown = cell.locator(".jp-Cell-outputArea").inner_text()
                for name_shown, value in moved.items():
                    symbol = re.search(r"[εβ]", name_shown)
                    if symbol:
                        assert re.search(rf"{symbol.group()}\s*=\s*{re.escape(value)}(?![\d.])", shown), (
                            f"{key}: after {spec.button}, no '{symbol.group()}={value}' in the lab")
            assert ui.dom_errors() == [], f"{key}: error output:\n{ui.dom_errors()}"
            assert ui.kernel_errors() == [], f"{key}: kernel errors: {ui.kernel_errors()[:3]}"
            assert ui.widget_failures() == [], f"{key}: {ui.widget_failures()}"
            ui.shot(cell, f"{stem}_{key}_after.png")
            shot = ui.shot(cell.locator(".jp-Cell-outputArea"), f"{stem}_{key}_output.png")
            if docs_shot == key and os.environ.get("PPO_COURSE_UPDATE_DOCS"):
                DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
                shutil.copy2(shot, DOCS_SCREENSHOT)

        saved = ui.save()
        code = [c for c in saved["cells"] if c["cell_type"] == "code"]
        not_run = [i for i, c in enumerate(code) if c.get("execution_count") is None]
        errors = [o.get("ename") for c in code for o in c.get("outputs", [])
                  if o.get("output_type") == "error"]
        assert not_run == [], f"{name}: code cells never ran: {not_run}"
        assert errors == [], f"{name}: error outputs in the saved notebook: {errors}"
    print(f"\n{name} timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    return timings


def test_chapter02_objective_explorer_and_bandit_lab(browser_page):
    exercise_notebook(
        browser_page, "02_trust_regions_clip_and_kl.ipynb",
        [Lab("objective_explorer(", sliders=(EPS, BETA)),
         Lab("bandit_lab(", sliders=(EPS, BETA), redraw_timeout=300)],
        run_all_timeout=900)


def test_chapter03_cartpole_lab(browser_page):
    exercise_notebook(
        browser_page, "03_ppo_on_cartpole.ipynb",
        [Lab("cartpole_lab(", sliders=(EPS, BETA), button="Run", redraw_timeout=600)],
        run_all_timeout=1200, docs_shot="cartpole_lab")
