"""The chapter 01–02 labs: `objective_explorer()` and `bandit_lab()`.

Both return a small object that displays as its widget box in JupyterLab, Notebook 7 and
VS Code (plain ipywidgets + matplotlib figures drawn into an `Output`; no ipympl), and that
a test or a script can drive without a browser:

    lab = bandit_lab()
    lab.sliders["lr"].value = 5.0          # a slider change re-runs real training
    lab.set(beta=0.5, clip_eps="off")      # several values, one run; False + message if refused
    lab.records, lab.figure, lab.n_runs, lab.text (the message line as plain text)

`bandit_lab` trains with `ppo_core.trainers.bandits.train_bandit_ppo` (and so through
`ppo_core.losses.ppo_objective`) on every change: a few hundred full-batch steps on tiny
tensors, well under a second on two CPU cores.
"""

from __future__ import annotations

import html
import math
import time
from dataclasses import replace

import ipywidgets as W
import matplotlib.pyplot as plt
from IPython import get_ipython

from ...trainers.bandits import BanditPPOConfig, diverged, make_bandit, train_bandit_ppo
from ..plots import plot_bandit_run, plot_clipped_objective

__all__ = ["objective_explorer", "bandit_lab", "ObjectiveExplorer", "BanditLab"]

#: the clip ranges offered by the ε slider; "off" switches the clip off
EPS_OPTIONS = ("off", 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
#: allowed ranges: (min, max) for numbers, set by the sliders' limits
RANGES = {"beta": (0.0, 5.0), "lr": (0.01, 100.0), "epochs": (1, 16)}


def _eps_value(v):
    """Slider value → clip_eps for the trainer (None when off)."""
    return None if v == "off" or v is None else float(v)


def show_in(output: W.Output, fig) -> None:
    """Replace what `output` shows with `fig` (only inside IPython; headless callers keep
    `fig`). The figure is rendered by the shell's display formatter and handed to the
    widget as its `outputs` state in one update, instead of capturing `display()` inside
    `with output:`: that capture routes messages by parent id, and under load
    `jupyter nbconvert --execute` (nbclient) was seen to wait forever for such a cell."""
    shell = get_ipython()
    if shell is not None:
        data, metadata = shell.display_formatter.format(fig)
        output.outputs = ({"output_type": "display_data", "data": data, "metadata": metadata},)


def _show(output: W.Output, fig) -> None:
    """Draw `fig` into `output` and close its pyplot handle."""
    show_in(output, fig)
    plt.close(fig)


class _Lab:
    """Shared plumbing: sliders in a dict, a message line, an Output for the figure."""

    def __init__(self, sliders: dict):
        self.sliders = sliders
        for s in sliders.values():                     # full labels, not "learning r..."
            s.style = {"description_width": "initial"}
        self.message = W.HTML()
        self.text = ""
        self.output = W.Output()
        self.figure = None
        self.n_runs = 0
        self._hold = False
        for s in sliders.values():
            s.observe(self._on_change, names="value")
        self.widget = W.VBox([W.HBox(list(sliders.values())[:2]),
                              W.HBox(list(sliders.values())[2:]), self.message, self.output])

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def _say(self, text: str, error: bool = False) -> None:
        self.text = text                     # the message as plain text (for code and tests)
        color = "crimson" if error else "#444"
        self.message.value = f"<span style='color:{color}'>{html.escape(text)}</span>"

    def _on_change(self, change):
        if not self._hold:
            self.update()

    def _valid(self, name, value):
        """None if `value` is acceptable for slider `name`, else the refusal message."""
        if name not in self.sliders:
            return f"unknown setting {name!r}; the sliders are {sorted(self.sliders)}"
        if name == "clip_eps":
            if value not in EPS_OPTIONS and not (value is None):
                return (f"clip_eps={value!r} refused: choose one of {list(EPS_OPTIONS)} "
                        f"('off' or None switches the clip off)")
            return None
        lo, hi = RANGES[name]
        ok_type = isinstance(value, (int, float)) and not isinstance(value, bool)
        if name == "epochs":
            ok_type = ok_type and float(value).is_integer()
        if not ok_type or not math.isfinite(float(value)) or not lo <= value <= hi:
            kind = "an integer" if name == "epochs" else "a number"
            return f"{name}={value!r} refused: it must be {kind} in [{lo}, {hi}]"
        return None

    def set(self, **values) -> bool:
        """Set several sliders and run once. Out-of-range values are refused: nothing
        changes, the message says why, and False is returned."""
        for name, value in values.items():
            problem = self._valid(name, value)
            if problem:
                self._say(problem + " (kept the previous settings)", error=True)
                return False
        self._hold = True
        try:
            for name, value in values.items():
                if name == "clip_eps" and value is None:
                    value = "off"
                self.sliders[name].value = int(value) if name == "epochs" else value
        finally:
            self._hold = False
        self.update()
        return True

    def values(self) -> dict:
        return {k: s.value for k, s in self.sliders.items()}


# ------------------------------------------------------------------ objective explorer

class ObjectiveExplorer(_Lab):
    """ε and β sliders redrawing min(r·Â, clip(r)·Â), −β·KL and their sum against r."""

    def __init__(self, clip_eps=0.2, beta=0.1):
        super().__init__({
            "clip_eps": W.SelectionSlider(options=EPS_OPTIONS, value=clip_eps if clip_eps is not None
                                          else "off", description="ε (clip)",
                                          continuous_update=False),
            "beta": W.FloatSlider(value=beta, min=0.0, max=RANGES["beta"][1], step=0.05,
                                  description="β (KL)", continuous_update=False),
        })
        self.widget = W.VBox([W.HBox(list(self.sliders.values())), self.message, self.output])
        self.update()

    def update(self):
        eps, beta = _eps_value(self.sliders["clip_eps"].value), float(self.sliders["beta"].value)
        self.figure = plot_clipped_objective(eps, beta)
        self.n_runs += 1
        self._say(f"ε = {eps if eps is not None else 'off'}, β = {beta:g}: the star marks where "
                  f"the per-sample objective is largest")
        _show(self.output, self.figure)


def objective_explorer(clip_eps=0.2, beta=0.1) -> ObjectiveExplorer:
    """Sliders for ε (with "off") and β; every change redraws the per-sample clipped
    objective, the KL penalty and their sum against r, for Â = +1 and Â = −1."""
    return ObjectiveExplorer(clip_eps, beta)


# ------------------------------------------------------------------ bandit lab

#: the lab's bandit and run: 5 Bernoulli arms; π_ref = softmax(init_logits) prefers arm 1
#: (like a pretrained model with a habit), the best arm is 4
LAB_MEANS = (0.3, 0.5, 0.55, 0.6, 0.8)
LAB_CONFIG = BanditPPOConfig(updates=25, batch_size=64, update_epochs=4, lr=1.0, clip_eps=0.2,
                             beta=0.1, n_seeds=8, init_logits=(1.0, 2.0, 0.0, 0.0, 0.0), seed=0)


class BanditLab(_Lab):
    """Sliders for β, ε (with "off"), learning rate and epochs per batch; each change
    re-runs bandit PPO and redraws reward, π(best), KL to the reference, per-update KL and
    the clip fraction. `records` holds the last run's metrics."""

    def __init__(self, beta=0.1, clip_eps=0.2, lr=1.0, epochs=4, config=LAB_CONFIG,
                 bandit=None):
        self.bandit = bandit if bandit is not None else make_bandit("bernoulli", LAB_MEANS)
        self.config = config
        self.records: list[dict] = []
        self.seconds = math.nan
        super().__init__({
            "beta": W.FloatSlider(value=beta, min=RANGES["beta"][0], max=RANGES["beta"][1],
                                  step=0.01, description="β (KL)", continuous_update=False),
            "clip_eps": W.SelectionSlider(options=EPS_OPTIONS,
                                          value=clip_eps if clip_eps is not None else "off",
                                          description="ε (clip)", continuous_update=False),
            "lr": W.FloatLogSlider(value=lr, base=10, min=math.log10(RANGES["lr"][0]),
                                   max=math.log10(RANGES["lr"][1]), step=0.1,
                                   description="learning rate", continuous_update=False),
            "epochs": W.IntSlider(value=epochs, min=RANGES["epochs"][0], max=RANGES["epochs"][1],
                                  description="epochs/batch", continuous_update=False),
        })
        self.update()

    def current_config(self) -> BanditPPOConfig:
        v = self.values()
        return replace(self.config, beta=float(v["beta"]), clip_eps=_eps_value(v["clip_eps"]),
                       lr=float(v["lr"]), update_epochs=int(v["epochs"]))

    def update(self):
        cfg = self.current_config()
        t0 = time.perf_counter()
        try:
            records = train_bandit_ppo(self.bandit, cfg)
        except ValueError as e:                      # the trainer refused the settings
            self._say(f"refused: {e}", error=True)
            return
        self.seconds = time.perf_counter() - t0
        self.records = records
        self.n_runs += 1
        eps = "off" if cfg.clip_eps is None else f"{cfg.clip_eps:g}"
        title = (f"β={cfg.beta:g}, ε={eps}, lr={cfg.lr:.3g}, epochs={cfg.update_epochs}  "
                 f"({cfg.n_seeds} seeds, mean shown)")
        self.figure = plot_bandit_run(records, title=title)
        last = records[-1]
        if diverged(records):
            causes = []
            if cfg.clip_eps is None:
                causes.append("with the clip off, nothing removes the incentive to raise r(θ) on a rare arm")
            if cfg.beta > 0:
                causes.append(f"the KL penalty's own gradient is never clipped and β·lr = "
                              f"{cfg.beta * cfg.lr:.3g} overshoots")
            if not causes:
                causes.append("the learning rate is too large for the first epoch, where "
                              "r = 1 and the clip cannot act yet")
            self._say(f"The run DIVERGED at update {last['iteration']}: the logits exploded "
                      f"(one step pushed an arm's probability below e^-60). Likely cause: "
                      f"{'; '.join(causes)}.", error=True)
        else:
            self._say(f"{len(records)} updates in {self.seconds:.2f} s. Final: reward "
                      f"{last['charts/expected_reward']:.3f} (best arm pays {max(LAB_MEANS):.2f}), "
                      f"π(best) {last['bandit/p_best']:.2f}, KL to ref {last['objective/kl']:.3f}.")
        _show(self.output, self.figure)


def bandit_lab(beta=0.1, clip_eps=0.2, lr=1.0, epochs=4) -> BanditLab:
    """The bandit PPO lab: β, ε ("off" allowed), learning rate and epochs-per-batch sliders;
    every change re-runs real training (8 seeds × 25 updates × 64 pulls)."""
    return BanditLab(beta=beta, clip_eps=clip_eps, lr=lr, epochs=epochs)
