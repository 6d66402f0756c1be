"""Sphinx configuration of the course website (`python3 -m ppo_core.course book`).

Sphinx reads build/book/src, a folder of links that `ppo_core.course.book.stage` makes to
docs/index.md, docs/figures/, chapters/ and exercises/; this file stays in docs/ (`-c docs`).
The notebooks run in the test command's mode (the course's one mode, offline), which
`ppo_core.course.book` sets; their outputs are cached under build/book/jupyter_cache.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

project = "PPO, from bandits to GPT-2 RLHF"
author = "the ppo_core course"
copyright = "the ppo_core course authors"

extensions = ["myst_nb"]
root_doc = "index"
exclude_patterns = ["**/.ipynb_checkpoints", "**/runs", "chapters/data", "figures/*.md"]
suppress_warnings = ["mystnb.unknown_mime_type"]

# --- MyST: $...$ and $$...$$ math in markdown cells, as Jupyter renders it ------------------
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

# --- MyST-NB: execute once, cache, fail on errors ------------------------------------------
nb_execution_mode = "cache"
nb_execution_cache_path = str(ROOT / "build" / "book" / "jupyter_cache")
nb_execution_timeout = 1800            # per cell; chapter 05 trains an RLHF run
nb_execution_in_temp = False           # each notebook runs in its own folder, as in Jupyter
nb_execution_raise_on_error = True     # a cell that raises fails the build
nb_execution_show_tb = True            # ... and the log says which one
nb_merge_streams = True                # one block per cell for stdout, not one per print
nb_scroll_outputs = True               # long outputs scroll instead of filling the page
nb_output_stderr = "show"               # warnings as Jupyter shows them
nb_ipywidgets_js = {}                  # widgets are drawn from their saved state, without JS
                                       # (ppo_core.course.book.WidgetSnapshot)

# --- HTML ------------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = "PPO, from bandits to GPT-2 RLHF"
html_static_path = ["_static", str(ROOT / "build" / "book" / "static")]   # + mathjax/, see below
html_css_files = ["course.css"]
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": True,       # the executed .ipynb of each page
    "home_page_in_toc": True,
    "navigation_with_keys": False,
}
html_last_updated_fmt = None
html_show_sourcelink = False

# --- math: MathJax 2.7.9 from the jupyter-server-mathjax package, copied into the site -------
# (`ppo_core.course.book.stage` links it as build/book/static/mathjax), so equations render
# offline too: no CDN, no network, neither for the build nor for the reader.
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
mathjax2_config = {
    # MyST marks the page "mathjax_ignore" and each equation "math", as for MathJax 3
    "tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]],
                "processEscapes": True, "ignoreClass": "tex2jax_ignore|mathjax_ignore",
                "processClass": "tex2jax_process|mathjax_process|math|output_area"},
    "HTML-CSS": {"availableFonts": [], "webFont": "STIX-Web", "imageFont": None},
    "showMathMenu": False,
    "messageStyle": "none",
}
