"""What a learner does in JupyterLab, as Playwright steps: open a notebook, Run All, save,
find a lab's cell, move a slider with the keyboard, press a button, wait for the plot to
redraw, and look for errors or widgets that did not render.

DOM facts relied on (JupyterLab 4, ipywidgets 8): a code cell is `.jp-CodeCell`, its input
prompt reads `[*]:` while queued or running; outputs are `.jp-OutputArea-output` (an error
renders as `application/vnd.jupyter.stderr` with the traceback); a slider is `.widget-slider`
with its description in `.widget-label`, a keyboard-driven handle `.noUi-handle` on the
track `.noUi-target`, and its value in `.widget-readout`; a button is
`button.jupyter-button`; inline matplotlib figures are `<img src="data:image/png;base64,...">`.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

# A widget that did not render shows one of these instead of itself.
WIDGET_FAILURES = re.compile(
    r"Loading widget|Error displaying widget|Error rendering|model not found|"
    r"\b(?:VBox|HBox|Box|GridBox|Tab|Accordion|interactive|Output)\(children=|"
    r"\b\w+(?:Slider|Button|Dropdown|Text|Checkbox)\((?:value|description)=")
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\w*Error\b.*:", re.M)


class NotebookUI:
    """One notebook opened in JupyterLab in a Playwright page."""

    def __init__(self, page, lab, name: str, shots: Path):
        self.page, self.lab, self.name, self.shots = page, lab, name, shots
        shots.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ whole notebook
    def open(self, timeout: float = 180.0) -> None:
        self.page.goto(self.lab.url(self.name))
        self.page.locator(".jp-NotebookPanel .jp-Notebook").first.wait_for(
            state="visible", timeout=timeout * 1000)
        deadline = time.monotonic() + timeout
        while not self.lab.kernels():  # the session starts the kernel a moment after opening
            if time.monotonic() > deadline:
                raise AssertionError(f"no kernel started for {self.name}")
            time.sleep(0.5)
        self.lab.wait_kernels_idle(timeout=timeout)
        # the kernel status shown to the learner, as well as the server's view
        self.page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').first.wait_for(
            timeout=timeout * 1000)

    def menu(self, menu: str, item: str) -> None:
        """Click `menu` in the menu bar, then the item whose label is exactly `item`."""
        self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(rf"^{re.escape(menu)}$")).click()
        self.page.locator(".lm-Menu-itemLabel",
                          has_text=re.compile(rf"^{re.escape(item)}$")).first.click()

    def busy_prompts(self) -> int:
        return self.page.locator(".jp-CodeCell .jp-InputPrompt", has_text="[*]").count()

    def wait_until_done(self, timeout: float) -> None:
        """Wait until no cell is queued or running and the kernel has settled idle."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: cells still running after {timeout:.0f} s "
                                     f"({self.busy_prompts()} prompts show [*])")
            if self.busy_prompts() == 0:
                self.lab.wait_kernels_idle(timeout=remaining)
                if self.busy_prompts() == 0:
                    return
            time.sleep(1.0)

    def run_all(self, timeout: float) -> float:
        """Run ▸ Run All Cells, as a learner would; returns the seconds it took."""
        t0 = time.monotonic()
        self.menu("Run", "Run All Cells")
        self.wait_until_done(timeout)
        return time.monotonic() - t0

    def save(self, timeout: float = 30.0) -> dict:
        """File ▸ Save Notebook; returns the saved notebook as JSON."""
        path = self.lab.root / self.name
        before = path.stat().st_mtime_ns
        self.menu("File", "Save Notebook")
        deadline = time.monotonic() + timeout
        while path.stat().st_mtime_ns == before:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} was not saved within {timeout:.0f} s")
            time.sleep(0.25)
        time.sleep(0.5)  # let the write finish
        return json.loads(path.read_text())

    # ------------------------------------------------------------------ checks
    def dom_errors(self) -> list[str]:
        """Texts of every output (cells and widgets' own output areas) showing a traceback."""
        texts = self.page.locator(
            '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').all_inner_texts()
        return [t[:2000] for t in texts if TRACEBACK.search(t)]

    def widget_failures(self) -> list[str]:
        """Outputs that show a widget's placeholder, error or raw model instead of the widget."""
        texts = self.page.locator(".jp-OutputArea-output").all_inner_texts()
        return [t[:300] for t in texts if WIDGET_FAILURES.search(t)]

    def kernel_errors(self) -> list[str]:
        """Errors the kernel sent (see e2e_server.KernelMessages), if the page is watched."""
        watcher = getattr(self.page, "kernel_messages", None)
        return list(watcher.errors) if watcher else []

    # ------------------------------------------------------------------ one lab
    def code_cell(self, call: str):
        """The code cell that calls `call` (e.g. "bandit_lab(") and shows widgets."""
        cells = self.page.locator(".jp-CodeCell", has_text=call).filter(
            has=self.page.locator(".jupyter-widgets"))
        n = cells.count()
        assert n >= 1, f"{self.name}: no code cell calling {call!r} shows a widget"
        return cells.nth(n - 1)

    @staticmethod
    def slider(cell, label: str):
        """The slider in `cell` whose description matches the regex `label`."""
        sliders = cell.locator(".widget-slider").filter(
            has=cell.page.locator(".widget-label", has_text=re.compile(label)))
        assert sliders.count() >= 1, (
            f"no slider labelled /{label}/; labels: "
            f"{cell.locator('.widget-slider .widget-label').all_inner_texts()}")
        return sliders.first

    @staticmethod
    def images(cell) -> list[str]:
        """`src` of every image in the cell's outputs (inline matplotlib figures)."""
        return [img.get_attribute("src") or "" for img in cell.locator(".jp-OutputArea img").all()]

    def move_slider(self, slider, key: str = "ArrowRight", presses: int = 3) -> tuple[str, str]:
        """Focus the slider's handle and press `key`; returns its readout before and after.
        If the keyboard did not move it, drag the handle with the mouse instead."""
        readout = slider.locator(".widget-readout")
        before = readout.inner_text().strip()
        handle = slider.locator(".noUi-handle").first
        handle.scroll_into_view_if_needed()
        handle.focus()
        for _ in range(presses):
            handle.press(key)
            time.sleep(0.15)
        after = readout.inner_text().strip()
        if after == before:  # drag the handle three quarters of the way along the track
            track = slider.locator(".noUi-target").bounding_box()
            grip = handle.bounding_box()
            y = grip["y"] + grip["height"] / 2
            self.page.mouse.move(grip["x"] + grip["width"] / 2, y)
            self.page.mouse.down()
            self.page.mouse.move(track["x"] + 0.75 * track["width"], y, steps=8)
            self.page.mouse.up()
            after = readout.inner_text().strip()
        assert after != before, f"slider did not move from {before}"
        return before, after

    def wait_redraw(self, cell, before: list[str], timeout: float) -> list[str]:
        """Wait until the cell's images differ from `before` and the kernel is idle."""
        deadline = time.monotonic() + timeout
        while True:
            errors = self.kernel_errors()
            assert errors == [], f"kernel error while waiting for a redraw:\n{errors[0]}"
            now = self.images(cell)
            if now and now != before:
                self.lab.wait_kernels_idle(timeout=max(1.0, deadline - time.monotonic()),
                                           settle=1.0)
                return self.images(cell)
            if time.monotonic() > deadline:
                raise AssertionError(f"plot did not redraw within {timeout:.0f} s "
                                     f"({len(now)} images, unchanged)")
            time.sleep(0.5)

    def shot(self, locator, name: str) -> Path:
        path = self.shots / name
        self.page.mouse.move(0, 0)  # no hover toolbar in the picture
        locator.screenshot(path=str(path))
        return path
