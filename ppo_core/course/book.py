"""The course as a website: every chapter, exercise and solution, executed, with its figures.

    python3 -m ppo_core.course book      # set up .venv, then build build/book/html/index.html
    python -m ppo_core.course.book [--fresh] [-- SPHINX-ARGS]   # the same, inside the venv

Sphinx with MyST-NB and sphinx-book-theme (`requirements-book.txt`); the configuration is
`docs/conf.py`, the landing page `docs/index.md`. The notebooks are executed in the mode the
tests run (the course's one mode, offline), each in its own folder, and their outputs are
kept in a jupyter-cache under `build/book/jupyter_cache`: a rebuild re-executes only the
notebooks whose code changed, and all of them when `ppo_core` or a pinned requirement
changed since (`--fresh` empties the cache in any case). A cell that raises fails the build.

Sphinx reads a staging folder, `build/book/src`: a copy of `docs/index.md` and links to
`docs/figures/`, `chapters/` and `exercises/` (copies where links are not allowed), so the
site's paths are the repository's: `chapters/03_ppo_on_cartpole.html`.

ipywidgets state cannot be replayed without a kernel. `WidgetSnapshot` (registered for
MyST-NB in pyproject.toml) draws each widget from the state the execution saved: a progress
bar as its last line of text, a lab as a note ("run this notebook in Jupyter to use the
lab"), its settings and the figure it last drew. No widget JavaScript is loaded.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "book"
SOURCE, HTML, CACHE = BUILD / "src", BUILD / "html", BUILD / "jupyter_cache"
#: the environment of the test command: the site shows what the tests run. One difference:
#: the kernels draw with matplotlib-inline (Agg underneath, no display needed), because under
#: plain Agg `plt.show()` shows nothing and the pages would have no figures.
BOOK_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "MPLBACKEND": "module://matplotlib_inline.backend_inline", "PYTHONHASHSEED": "0",
            "PPO_COURSE_BUILD_THREADS": "1"}
#: staging folder entry → what it stands for in the repository
LINKS = {"index.md": "docs/index.md", "figures": "docs/figures", "chapters": "chapters",
         "exercises": "exercises"}

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
LAB_NOTE = ("Interactive lab: run this notebook in Jupyter to use it "
            "(python3 -m ppo_core.course lab). Shown here: its state when this page was built.")


# --------------------------------------------------------------------------- building

def stage(source: Path = SOURCE) -> Path:
    """(Re)create the staging folder that Sphinx reads; returns it. Folders are links; the
    index page is a copy (rewritten only when it changed), so that its relative links are
    read from the staging folder, not from docs/."""
    source.mkdir(parents=True, exist_ok=True)
    for name, target in LINKS.items():
        link, real = source / name, ROOT / target
        if link.is_symlink() and link.resolve() == real.resolve() and real.is_dir():
            continue
        if real.is_file() and not link.is_symlink() and link.is_file():
            if link.read_bytes() != real.read_bytes():
                shutil.copy2(real, link)
            continue
        if link.is_symlink() or link.is_file():
            link.unlink()
        elif link.is_dir():
            shutil.rmtree(link)
        if real.is_file():
            shutil.copy2(real, link)
            continue
        try:
            link.symlink_to(real, target_is_directory=True)
        except OSError:                                    # no symlinks here: copy
            shutil.copytree(real, link)
    _link_mathjax(source.parent / "static" / "mathjax")
    return source


def _link_mathjax(link: Path) -> None:
    """build/book/static/mathjax → MathJax 2's files in the jupyter-server-mathjax package,
    which Sphinx copies into the site's _static/ (docs/conf.py: html_static_path)."""
    import jupyter_server_mathjax

    real = Path(jupyter_server_mathjax.__file__).parent / "static"
    if link.is_symlink() and link.resolve() == real.resolve():
        return
    if link.is_symlink() or link.exists():
        link.unlink() if link.is_symlink() else shutil.rmtree(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    try:
        link.symlink_to(real, target_is_directory=True)
    except OSError:
        shutil.copytree(real, link)


def _fingerprint(paths) -> str:
    h = hashlib.sha256(json.dumps(BOOK_ENV, sort_keys=True).encode())
    for path in sorted(paths):
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _invalidate(fresh: bool) -> str:
    """Drop what is out of date; returns what was dropped ("", "pages" or "all").

    The jupyter-cache knows a notebook's code, not the package it imports: when `ppo_core`
    (other than this module and the launcher) or requirements.txt changed since the cached
    outputs were made, every notebook runs again. When only this module (the widget
    renderer) or the site's requirements changed, the pages are rendered again from the
    cached outputs."""
    not_run = {Path(__file__).resolve(), Path(__file__).with_name("__main__.py").resolve()}
    code = [p for p in (ROOT / "ppo_core").rglob("*.py") if p.resolve() not in not_run]
    render = [Path(__file__).resolve(), ROOT / "requirements-book.txt"]
    stamps = {"all": (CACHE / "ppo_core.sha256", _fingerprint(code + [ROOT / "requirements.txt"])),
              "pages": (HTML / "renderer.sha256", _fingerprint(render))}
    dropped = ""
    for what, (stamp, value) in stamps.items():
        if fresh or not stamp.exists() or stamp.read_text() != value:
            for folder in ((CACHE, HTML) if what == "all" else (HTML,)):
                shutil.rmtree(folder, ignore_errors=True)
            dropped = dropped or what
    for stamp, value in stamps.values():
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(value)
    return dropped


def build(fresh: bool = False, sphinx_args=(), quiet: bool = True) -> dict:
    """Build the site into build/book/html; returns {"seconds", "index", "dropped"}.

    Raises subprocess.CalledProcessError when Sphinx fails (a cell that raises, a warning
    about a missing file or notebook); its report is in build/book/html/reports/."""
    dropped = _invalidate(fresh)
    stage()
    env = dict(os.environ, **BOOK_ENV)
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-c", str(ROOT / "docs"),
           "--fail-on-warning", "--keep-going", *(["-q"] if quiet else []),
           str(SOURCE), str(HTML), *sphinx_args]
    print("+", " ".join(cmd), flush=True)
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    seconds = time.monotonic() - t0
    return {"seconds": seconds, "index": HTML / "index.html", "dropped": dropped}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    fresh = "--fresh" in argv
    rest = argv[argv.index("--") + 1:] if "--" in argv else []
    unknown = [a for a in argv[:argv.index("--") if "--" in argv else len(argv)] if a != "--fresh"]
    if unknown:
        print(f"unknown arguments {unknown}\n{__doc__}", file=sys.stderr)
        return 2
    try:
        result = build(fresh=fresh, sphinx_args=rest)
    except subprocess.CalledProcessError as e:
        print(f"the site build failed (exit status {e.returncode}); execution reports, if "
              f"any, are in {HTML / 'reports'}", file=sys.stderr)
        return 1
    why = {"all": " (ppo_core or requirements.txt changed: every notebook ran again)",
           "pages": " (the renderer changed: pages redrawn from the cached outputs)"}
    print(f"built in {result['seconds']:.0f} s{why.get(result['dropped'], '')}: "
          f"open {result['index']}")
    return 0


# --------------------------------------------------------------------------- widgets

def _children(state: dict, model_id: str) -> list[str]:
    """`model_id` and every widget it refers to ("IPY_MODEL_<id>" in its state), breadth
    first (a box's children in their order)."""
    seen, order, todo = set(), [], [model_id]
    while todo:
        mid = todo.pop(0)
        if mid in seen or mid not in state:
            continue
        seen.add(mid)
        order.append(mid)
        for value in state[mid].get("state", {}).values():
            refs = value if isinstance(value, list) else [value]
            todo += [r[len("IPY_MODEL_"):] for r in refs
                     if isinstance(r, str) and r.startswith("IPY_MODEL_")]
    return order


def _text(value: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", value or "")).strip()


def _setting(s: dict) -> str | None:
    """'ε = 0.2' for a control with a description and a value, else None."""
    label = _text(s.get("description", ""))
    if not label or "value" not in s and "index" not in s:
        return None
    value = s.get("value")
    if "_options_labels" in s and isinstance(s.get("index"), int):
        value = s["_options_labels"][s["index"]]
    return f"{label} {value}" if label.endswith((":", "=")) else f"{label} = {value}"


def widget_snapshot(state: dict, model_id: str) -> dict:
    """What a widget tree showed last: {"kind": "progress"|"lab"|"gone", "text": [...],
    "settings": [...], "outputs": [display_data outputs of its Output widgets]}."""
    ids = _children(state, model_id)
    if not ids:
        return {"kind": "gone", "text": [], "settings": [], "outputs": []}
    models = [(state[i].get("model_name", ""), state[i].get("state", {})) for i in ids]
    if any(name in ("FloatProgressModel", "IntProgressModel") for name, _ in models):
        parts = []
        for name, s in models:
            if name in ("HTMLModel", "LabelModel") and _text(s.get("value", "")):
                parts.append(_text(s["value"]))
            elif name.endswith("ProgressModel"):
                frac = float(s.get("value", 0)) / max(float(s.get("max", 1) or 1), 1e-12)
                filled = round(10 * min(max(frac, 0.0), 1.0))
                parts.append("█" * filled + "·" * (10 - filled))
        return {"kind": "progress", "text": [" ".join(parts)], "settings": [], "outputs": []}
    text, settings, outputs = [], [], []
    for name, s in models:
        if name == "OutputModel":
            outputs += list(s.get("outputs", []))
        elif name in ("HTMLModel", "LabelModel", "HTMLMathModel") and _text(s.get("value", "")):
            text.append(_text(s["value"]))
        elif name != "ButtonModel" and (setting := _setting(s)):
            settings.append(setting)
    return {"kind": "lab", "text": text, "settings": settings, "outputs": outputs}


class WidgetSnapshot:
    """MyST-NB mime renderer (entry point `myst_nb.mime_renderers`) for ipywidgets views:
    their last state from the notebook's saved widget state (`widget_snapshot`)."""

    mime_priority_overrides = ()

    @staticmethod
    def handle_mime(renderer, data, inline):
        if data.mime_type != WIDGET_VIEW:
            return None
        from docutils import nodes
        from myst_nb.core.render import MimeData, strip_ansi

        metadata = renderer.renderer.nb_client.nb_metadata
        state = (metadata.get("widgets") or {}).get(WIDGET_STATE, {}).get("state", {})
        view = data.content if isinstance(data.content, dict) else json.loads(data.string)
        shot = widget_snapshot(state, view.get("model_id", ""))
        if shot["kind"] == "gone":
            return []
        if shot["kind"] == "progress":
            return [nodes.literal_block(text=shot["text"][0], classes=["output", "stream"])]
        note = nodes.note("", nodes.paragraph(text=LAB_NOTE), classes=["ppo-lab"])
        for line in ([" · ".join(shot["settings"])] if shot["settings"] else []) + shot["text"]:
            note += nodes.paragraph(text=line)
        for out in shot["outputs"]:
            for mime in ("image/png", "image/jpeg"):
                if mime in out.get("data", {}):
                    note += renderer.render_image(MimeData(
                        mime, out["data"][mime], cell_metadata=data.cell_metadata,
                        output_metadata=out.get("metadata", {}), cell_index=data.cell_index,
                        output_index=data.output_index, line=data.line))
                    break
            else:
                if out.get("output_type") == "error":            # shown, never hidden
                    tb = strip_ansi("\n".join(out.get("traceback", [])))
                    note += nodes.literal_block(text=tb, classes=["output", "traceback"])
                elif "text/plain" in out.get("data", {}) or out.get("output_type") == "stream":
                    body = out.get("text") or out["data"]["text/plain"]
                    note += nodes.literal_block(text="".join(body), classes=["output"])
        return [note]


if __name__ == "__main__":
    sys.exit(main())
