"""The CartPole lab (chapter 03): move ε, β, the learning rate and the number of epochs, press
Run, and watch a real PPO run (a few seconds) overlaid on the previous ones.

What to look for: with the clip off, many epochs and a large learning rate, each update
pushes π far from the policy that collected the data (the KL to π_old explodes) and the
return collapses; switching the clip back on (ε = 0.2) with everything else unchanged
restores learning. β adds a soft KL penalty to π_old, the reference of the PPO paper's
penalty variant (the trainer penalises KL(π_θ‖π_old), the direction RLHF uses; the paper
writes KL(π_old‖π_θ); for small steps the two agree to second order).

The right panel plots `losses/approx_kl`: the k1 estimate of KL(π_old‖π_θ) on the batch,
averaged over the update's epochs (each measured before that epoch's step, as CleanRL logs
it), so it lags the KL the update finally reached.

Headless use (tests, scripts): `lab = cartpole_lab(display=False)`, set `lab.eps.value`,
`lab.beta.value`, `lab.lr.value`, `lab.epochs.value`, call `lab.run()`, read
`lab.last_records` and `lab.fig`.
"""

from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt

from ...trainers.cartpole import CartPoleConfig, train
from .bandit import show_in

__all__ = ["cartpole_lab", "CartPoleLab", "LAB_RUN", "LAB_SECONDS"]

#: the fixed part of every lab run: 12,288 steps, full-batch epochs, constant learning rate
#: (no annealing, so that a too-large step stays too large): about 1-2 s on two idle cores
#: at K = 30 epochs; LAB_SECONDS caps it on a busy machine.
LAB_RUN = dict(env_id="CartPole-v1", total_steps=12_288, num_envs=32, num_steps=16,
               num_minibatches=1, anneal_lr=False, eval_every=0, threads=1)

#: wall-clock guard: a lab run stops after this many training seconds even on a slow machine
LAB_SECONDS = 5.0

_EPS = ["off", 0.05, 0.1, 0.2, 0.3, 0.5]
_BETA = [0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0]
_LR = [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]


class CartPoleLab:
    """Sliders + Run button + a two-panel figure (return; KL to π_old), one line per run."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        style = {"description_width": "110px"}
        self.eps = W.SelectionSlider(options=_EPS, value=0.2, description="clip ε", style=style)
        self.beta = W.SelectionSlider(options=_BETA, value=0.0, description="KL penalty β", style=style)
        self.lr = W.SelectionSlider(options=_LR, value=3e-3, description="learning rate", style=style)
        self.epochs = W.IntSlider(value=10, min=1, max=30, description="epochs K", style=style)
        self.run_button = W.Button(description="Run", button_style="primary", icon="play")
        self.clear_button = W.Button(description="Clear", icon="trash")
        self.status = W.HTML("")
        self.output = W.Output()
        self.displayed = False
        self.runs: list[dict] = []
        with plt.ioff():
            self.fig, (self.ax, self.ax_kl) = plt.subplots(1, 2, figsize=(10, 3.6))
        self._style_axes()
        self.run_button.on_click(lambda _: self.run())
        self.clear_button.on_click(lambda _: self.clear())
        self.widget = W.VBox([
            W.HBox([W.VBox([self.eps, self.beta]), W.VBox([self.lr, self.epochs])]),
            W.HBox([self.run_button, self.clear_button, self.status]),
            self.output,
        ])

    @property
    def last_records(self) -> list[dict]:
        """The newest run's records ([] before the first run)."""
        return self.runs[-1]["records"] if self.runs else []

    def config(self) -> CartPoleConfig:
        """The CartPoleConfig the sliders describe (plus the fixed LAB_RUN settings)."""
        eps = None if self.eps.value == "off" else float(self.eps.value)
        return CartPoleConfig(seed=self.seed, clip_eps=eps, beta=float(self.beta.value),
                              kl_reference="rollout", lr=float(self.lr.value),
                              update_epochs=int(self.epochs.value),
                              max_train_seconds=LAB_SECONDS, **LAB_RUN)

    def label(self) -> str:
        return (f"ε={self.eps.value}, β={self.beta.value}, "
                f"lr={self.lr.value:g}, K={self.epochs.value}")

    def run(self) -> list[dict]:
        """Train once with the current slider values; overlay the curves; return the records."""
        self.run_button.disabled = True
        self.status.value = "training…"
        try:
            result = train(self.config())
        finally:
            self.run_button.disabled = False
        final = [r["charts/episodic_return"] for r in result.records[-4:]
                 if "charts/episodic_return" in r]
        run = {"label": self.label(), "records": result.records,
               "final_return": sum(final) / max(len(final), 1),
               "seconds": result.train_seconds}
        self.runs.append(run)
        self._plot(run)
        steps = result.records[-1]["global_step"] if result.records else 0
        cut = "" if steps >= LAB_RUN["total_steps"] else f", stopped at {LAB_SECONDS:g} s / {steps} steps"
        self.status.value = (f"{run['label']}: final return {run['final_return']:.0f} "
                             f"({run['seconds']:.1f} s{cut})")
        self._show()
        return result.records

    def clear(self) -> None:
        """Forget every run and empty the figure."""
        self.runs.clear()
        self.ax.clear()
        self.ax_kl.clear()
        self._style_axes()
        self.status.value = ""
        self._show()

    # -- drawing ------------------------------------------------------------------
    def _style_axes(self) -> None:
        self.ax.set(xlabel="environment steps", ylabel="episodic return (last 20 episodes)",
                    title="return", ylim=(0, 520))
        self.ax_kl.set(xlabel="environment steps", ylabel="approx KL(π_old‖π), epoch mean",
                       title="how far each update moved π", yscale="log")
        for a in (self.ax, self.ax_kl):
            a.grid(alpha=0.3)
        self.fig.tight_layout()

    def _plot(self, run: dict) -> None:
        recs = run["records"]
        steps = [r["global_step"] for r in recs if "charts/episodic_return" in r]
        ret = [r["charts/episodic_return"] for r in recs if "charts/episodic_return" in r]
        line, = self.ax.plot(steps, ret, label=run["label"])
        kl = [max(abs(r["losses/approx_kl"]), 1e-6) for r in recs]
        self.ax_kl.plot([r["global_step"] for r in recs], kl, color=line.get_color())
        self.ax.legend(fontsize=7, loc="upper left")
        self.fig.tight_layout()

    def _show(self) -> None:
        if not self.displayed:                  # headless (tests, scripts): nothing to refresh
            return
        show_in(self.output, self.fig)

    def __repr__(self) -> str:
        return f"CartPoleLab({len(self.runs)} runs; sliders: eps, beta, lr, epochs; run())"


def cartpole_lab(seed: int = 0, display: bool = True) -> CartPoleLab:
    """Build the lab; show it when `display` (in a notebook). Returns the `CartPoleLab`."""
    lab = CartPoleLab(seed=seed)
    if display:
        from IPython.display import display as _display
        lab.displayed = True
        lab._show()
        _display(lab.widget)
    return lab
