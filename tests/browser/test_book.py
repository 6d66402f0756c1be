"""The course website (`python3 -m ppo_core.course book`) as a reader sees it.

Builds the site (`ppo_core.course.book.build`: Sphinx + MyST-NB, the notebooks executed in
the course's one mode and cached in build/book/jupyter_cache, so a second run reuses the outputs), serves
build/book/html on a loopback port and opens it in headless Chromium. Checks that

* following the pages' "next" links from the index visits every chapter, exercise and
  solution page, in the order of the sidebar, and the sidebar links to all of them;
* each chapter page shows every figure its executed notebook holds (`<img>` in the cell
  outputs, each loaded, > 0 where the notebook has figures), shows no error output or
  traceback, and its equations are typeset by MathJax (served with the site: no TeX source
  left on the page);
* the pages ask for nothing outside the site (no CDN).

Screenshots of three chapters go to tests/browser/screenshots/. With
PPO_COURSE_UPDATE_DOCS=1 it also refreshes the README's figures in docs/figures/.
Skipped with the reason where no browser can be installed (see conftest.py).
"""

from __future__ import annotations

import base64
import functools
import io
import os
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from e2e_server import REPO, SCREENSHOTS

pytestmark = pytest.mark.browser

CHAPTERS = sorted(p.stem for p in (REPO / "chapters").glob("[0-9][0-9]_*.ipynb"))
EXERCISES = sorted(p.stem for p in (REPO / "exercises").glob("[0-9][0-9]_*.ipynb"))
PAGES = ([f"chapters/{c}" for c in CHAPTERS] + [f"exercises/{e}" for e in EXERCISES]
         + [f"exercises/solutions/{e}" for e in EXERCISES])
#: chapter → what its screenshot shows (a CSS selector scrolled into view; None: the top)
SHOTS = {"01_bandits_and_policy_gradients": None,
         "02_trust_regions_clip_and_kl": "div.admonition.ppo-lab",
         "03_ppo_on_cartpole": "img[src$='.gif']"}
#: the README's figures: docs/figures/NAME ← (chapter, index of the image in its outputs)
README_FIGURES = {"ch02_clip_and_penalty.png": ("02_trust_regions_clip_and_kl", 1),
                  "ch05_rlhf_runs.png": ("05_rlhf_with_ppo", 2),
                  "ch06_overoptimisation.png": ("06_diagnosing_instability", 0)}
#: MathJax 2 has loaded and typeset everything it queued
MATHJAX_DONE = """() => window.MathJax && MathJax.Hub && MathJax.isReady
    && MathJax.Hub.queue.pending === 0 && !MathJax.Hub.queue.running"""
ERROR_MARKERS = ("Traceback (most recent call last)", "Error Traceback")


@pytest.fixture(scope="module")
def site():
    """Build the site (reusing build/book's execution cache) and serve it; yields its URL."""
    from ppo_core.course import book

    t0 = time.monotonic()
    result = book.build()
    print(f"\nsite build: {time.monotonic() - t0:.0f} s")
    handler = functools.partial(_QuietHandler, directory=str(book.HTML))
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"url": f"http://127.0.0.1:{server.server_address[1]}", "html": book.HTML,
               "cache": book.CACHE, "seconds": result["seconds"]}
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A page left before a file was sent (the browser closed the connection) is not an
        error of the site; anything else is printed as usual."""
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


@pytest.fixture
def page(browser_page, site):
    """A page that may load the site and nothing else: other requests are answered with an
    error and recorded in `page.external`."""
    browser_page.external = []

    def route(r):
        if r.request.url.startswith(site["url"]):
            r.continue_()
        else:
            browser_page.external.append(r.request.url)
            r.abort()
    browser_page.route("**/*", route)
    return browser_page


def _executed_images(cache: Path, page_name: str) -> int:
    """Figures (PNG/JPEG/GIF outputs, and those of widget snapshots) in the executed notebook
    the page was made from: its outputs in the site's jupyter-cache."""
    from jupyter_cache import get_cache

    _, nb = get_cache(str(cache)).merge_match_into_file(str(REPO / f"{page_name}.ipynb"))
    state = nb["metadata"].get("widgets", {}).get(
        "application/vnd.jupyter.widget-state+json", {}).get("state", {})
    count = 0
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if any(m in data for m in ("image/png", "image/jpeg", "image/gif")):
                count += 1
            elif "application/vnd.jupyter.widget-view+json" in data:
                from ppo_core.course.book import widget_snapshot

                view = data["application/vnd.jupyter.widget-view+json"]
                shot = widget_snapshot(state, view["model_id"])
                count += sum("image/png" in o.get("data", {}) for o in shot["outputs"])
    return count


def test_navigation_reaches_every_page(page, site):
    page.goto(site["url"] + "/index.html")
    sidebar = {a.split("#")[0].removesuffix(".html") for a in page.eval_on_selector_all(
        "nav.bd-docs-nav a.reference.internal", "els => els.map(e => e.getAttribute('href'))")}
    assert set(PAGES) <= sidebar, f"not in the sidebar: {sorted(set(PAGES) - sidebar)}"
    visited = []
    for _ in range(len(PAGES) + 2):                    # follow "next" from the index
        nxt = page.locator("a.right-next")
        if nxt.count() == 0:
            break
        nxt.first.click()
        page.wait_for_load_state("load")
        visited.append(page.url.split(site["url"] + "/", 1)[1].split("#")[0].removesuffix(".html"))
    assert visited == PAGES, f"'next' from the index visits {visited}, expected {PAGES}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_page_shows_its_figures(page, site, chapter):
    page.goto(f"{site['url']}/chapters/{chapter}.html")
    page.wait_for_load_state("load")
    expected = _executed_images(site["cache"], f"chapters/{chapter}")
    imgs = page.locator("div.cell_output img")
    shown = imgs.count()
    assert shown >= expected > 0, f"{chapter}: {shown} figures on the page, {expected} in the notebook"
    broken = page.eval_on_selector_all(
        "div.cell_output img", "els => els.filter(e => !(e.complete && e.naturalWidth > 0))"
                               ".map(e => e.getAttribute('src'))")
    assert broken == [], f"{chapter}: figures that did not load: {broken}"
    text = page.locator("article").inner_text()
    errors = page.locator("div.cell_output .traceback, div.cell_output .output.error")
    assert errors.count() == 0, f"{chapter}: error outputs: {errors.all_inner_texts()[:2]}"
    assert not any(m in text for m in ERROR_MARKERS), f"{chapter}: a traceback on the page"
    assert page.locator("article .math").count() > 0, f"{chapter}: no equations found"
    page.wait_for_function(MATHJAX_DONE, timeout=120_000)
    typeset = page.locator("article .MathJax, article .MathJax_Display").count()
    assert typeset > 0 and "\\(" not in page.locator("article").inner_text(), (
        f"{chapter}: equations left as TeX source ({typeset} typeset)")
    assert page.locator("script[type='application/vnd.jupyter.widget-view+json']").count() == 0
    assert page.external == [], f"{chapter}: requests outside the site: {page.external}"
    if chapter in SHOTS:
        _screenshot(page, chapter, SHOTS[chapter])
    _update_readme_figures(page, chapter)
    print(f"\n{chapter}: {shown} figures ({expected} in the executed notebook)")


def _screenshot(page, chapter: str, selector: str | None) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    if selector:
        target = page.locator(selector).first
        assert target.count() == 1, f"{chapter}: nothing matches {selector!r} for the screenshot"
        target.scroll_into_view_if_needed()
        page.evaluate("window.scrollBy(0, -120)")
    page.screenshot(path=str(SCREENSHOTS / f"book_{chapter}.png"))


def _update_readme_figures(page, chapter: str) -> None:
    """With PPO_COURSE_UPDATE_DOCS=1: copy this chapter's README figures into docs/figures/,
    scaled to 800 px wide and palette-compressed (each < 100 kB)."""
    if not os.environ.get("PPO_COURSE_UPDATE_DOCS"):
        return
    from PIL import Image

    for name, (ch, index) in README_FIGURES.items():
        if ch != chapter:
            continue
        src = page.locator("div.cell_output img").nth(index).get_attribute("src")
        data = page.evaluate("""async (src) => {
            const r = await fetch(src); const b = new Uint8Array(await r.arrayBuffer());
            let s = ''; for (const x of b) s += String.fromCharCode(x); return btoa(s); }""", src)
        img = Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
        if img.width > 800:
            img = img.resize((800, round(img.height * 800 / img.width)), Image.Resampling.LANCZOS)
        out = REPO / "docs" / "figures" / name
        img.quantize(128).save(out, optimize=True)
        assert out.stat().st_size < 100_000, f"{out} is {out.stat().st_size} bytes"
