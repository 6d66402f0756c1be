"""The interactive labs: ipywidgets sliders that drive real training (chapters 01–06).

Each lab lives in its own module and is re-exported here, so chapters write
`from ppo_core.course.widgets import bandit_lab`. Only standard ipywidgets and matplotlib are used,
so the labs work in JupyterLab, Jupyter Notebook 7 and VS Code alike.
"""

import importlib

_LABS = {
    "objective_explorer": "bandit",
    "bandit_lab": "bandit",
    "cartpole_lab": "cartpole",
    "rlhf_lab": "rlhf",
}

__all__ = list(_LABS)


def __getattr__(name):
    if name in _LABS:
        module = importlib.import_module(f".{_LABS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
