"""The β/ε lab of chapter 05: sliders for the KL coefficient β and the clip range ε (and for
the run's length and learning rate), a Run button that trains the tiny GPT-2 with
token-level PPO, and curves of proxy reward, gold reward, KL to the reference, entropy and
clip fraction, one colour per run, with the last run's samples underneath.

Every run starts from the same pre-trained weights, so runs with different settings are
comparable. The lab is drivable without a browser (tests and nbval): set the sliders'
`.value`, call `lab.run()`, read `lab.last_records` and `lab.figure`.
"""

from __future__ import annotations

import copy
import html

import matplotlib.pyplot as plt

from ...lm import models, reward, text
from ..plots import plot_runs
from ...trainers.rlhf import RLHFConfig, train
from .bandit import show_in

__all__ = ["RLHFLab", "rlhf_lab", "plot_rlhf_runs"]

_PANELS = [("objective/proxy_reward", "proxy reward (reward model)"),
           ("objective/gold_reward", "gold reward (simulated reader)"),
           ("objective/kl", "KL(π‖π_ref) per sequence [nats]"),
           ("losses/entropy", "entropy per token [nats]"),
           ("losses/clipfrac", "fraction of tokens clipped")]
_LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3)
_MAX_STEPS = 30             # a run of 30 iterations stays within a minute on two CPU cores


def plot_rlhf_runs(runs: dict, axes=None, title: str = "", log_kl: bool = False):
    """Proxy reward, gold reward, KL, entropy and clip fraction per iteration for several
    runs (`plots.plot_runs` with these five panels in a row).

    Args: runs {label: records}; axes five matplotlib axes (None: a new 1×5 figure);
        log_kl: symmetric-log scale on the KL panel (runs whose KL differs 100-fold).
    Returns: the figure.
    """
    return plot_runs(runs, [k for k, _ in _PANELS], axes=axes, title=title, ncols=len(_PANELS),
                     titles=dict(_PANELS), logy=("objective/kl",) if log_kl else (),
                     linthresh=1.0, panel_size=(3.0, 3.0), marker="o")


class RLHFLab:
    """β and ε sliders + Run, over the tiny GPT-2 and the (unbiased or biased) reward model.

    Attributes:
        beta, clip_eps: the `FloatSlider`s; reward: a `Dropdown` (unbiased / exclamation);
        iterations: an `IntSlider` (PPO iterations per run, also `lab.steps`); learning_rate:
        a `SelectionSlider` (also `lab.lr`).
        run_button, clear_button: the buttons; output: where the figure is drawn.
        runs: {label: records} of every run so far; last_records: the newest run's records.
        figure: the matplotlib figure (1×5 axes).
        widget: the `VBox` to display.

    Args:
        steps: PPO iterations per run, 1 to 30 (default 6);
        lr: Adam learning rate (default 3e-4; the slider offers 1e-4 to 3e-3);
        batch_size, response_len, update_epochs: the size of each iteration (a run of the
            default 6 iterations takes a few seconds on two CPU cores).
        device: "cpu" by default (the tiny model is faster there than moving it around).
        reward_fn: texts → `(B,)` proxy reward used instead of the reward models (tests).
    """

    def __init__(self, steps: int | None = None, batch_size: int = 16, response_len: int = 12,
                 update_epochs: int = 2, lr: float = 3e-4, device: str = "cpu", seed: int = 0,
                 reward_fn=None):
        import ipywidgets as W

        if not isinstance(lr, (int, float)) or not 0 < lr < 1:
            raise ValueError(f"lr must be in (0, 1), got {lr!r}")
        self.batch_size, self.response_len, self.update_epochs = batch_size, response_len, update_epochs
        self.device, self.seed = device, seed
        self.iterations = W.IntSlider(min=1, max=_MAX_STEPS, step=1, description="iterations",
                                      continuous_update=False)
        self.steps = steps if steps is not None else 6   # checked
        rates = tuple(sorted(set(_LEARNING_RATES) | {float(lr)}))
        self.learning_rate = W.SelectionSlider(options=[(f"{r:g}", r) for r in rates],
                                               value=float(lr), description="lr",
                                               continuous_update=False)
        self._default_steps, self._default_lr = self.steps, self.lr
        self._base, self.tokenizer = models.load_policy("tiny", device=device)
        self._prompts = text.build_prompts(n=256, seed=1)
        self._reward_models: dict = {}
        self._reward_override = reward_fn
        self.runs: dict[str, list[dict]] = {}

        self.beta = W.FloatSlider(value=0.05, min=0.0, max=1.0, step=0.01, description="β (KL)",
                                  continuous_update=False, readout_format=".2f")
        self.clip_eps = W.FloatSlider(value=0.2, min=0.05, max=1.0, step=0.05,
                                      description="ε (clip)", continuous_update=False,
                                      readout_format=".2f")
        self.reward = W.Dropdown(options=[("unbiased reward model", "none"),
                                          ("reward model that likes '!'", "exclamation")],
                                 value="none", description="reward")
        self.run_button = W.Button(description="Run", button_style="primary", icon="play")
        self.clear_button = W.Button(description="Clear")
        self.status = W.HTML("Pick β and ε, then press Run (well under a second per iteration).")
        self.output = W.Output()
        self.samples = W.HTML()
        self.run_button.on_click(lambda _: self.run())
        self.clear_button.on_click(lambda _: self.clear())
        with plt.ioff():
            self.figure, self.axes = plt.subplots(1, len(_PANELS), figsize=(15, 3.0),
                                                  constrained_layout=True)
        self.widget = W.VBox([W.HBox([self.beta, self.clip_eps, self.reward]),
                              W.HBox([self.iterations, self.learning_rate]),
                              W.HBox([self.run_button, self.clear_button, self.status]),
                              self.output, self.samples])
        self._redraw()

    @property
    def last_records(self) -> list[dict]:
        """The newest run's records ([] before the first run)."""
        return next(reversed(self.runs.values()), [])

    @property
    def steps(self) -> int:
        """PPO iterations per run (the `iterations` slider)."""
        return int(self.iterations.value)

    @steps.setter
    def steps(self, value: int) -> None:
        if not isinstance(value, int) or not 1 <= value <= self.iterations.max:
            raise ValueError(f"steps must be an int in [1, {self.iterations.max}], got {value!r}")
        self.iterations.value = value

    @property
    def lr(self) -> float:
        """Adam learning rate of each run (the `learning_rate` slider)."""
        return float(self.learning_rate.value)

    @lr.setter
    def lr(self, value: float) -> None:
        rates = [v for _, v in self.learning_rate.options]
        if value not in rates:
            raise ValueError(f"lr must be one of {rates}, got {value!r}")
        self.learning_rate.value = value

    def _reward_fn(self, bias):
        if self._reward_override is not None:
            return self._reward_override
        if bias not in self._reward_models:
            self._reward_models[bias] = reward.load_reward_model(bias=bias, device=self.device)
        return self._reward_models[bias].score

    def run(self, beta: float | None = None, clip_eps: float | None = None) -> list[dict]:
        """Train from the pre-trained weights with the sliders' β and ε (or those given,
        which also move the sliders); add the run to the plot; return its records."""
        if beta is not None:
            self.beta.value = beta
        if clip_eps is not None:
            self.clip_eps.value = clip_eps
        b, eps = float(self.beta.value), float(self.clip_eps.value)
        bias = None if self.reward.value == "none" else self.reward.value
        label = f"β={b:.2f} ε={eps:.2f}" + (" (RM likes '!')" if bias else "")
        if (self.steps, self.lr) != (self._default_steps, self._default_lr):
            label += f" [{self.steps} it, lr {self.lr:g}]"
        self.status.value = f"training {label} ..."
        self.run_button.disabled = True
        try:
            cfg = RLHFConfig(steps=self.steps, batch_size=self.batch_size,
                             minibatch_size=max(1, self.batch_size // 2),
                             response_len=self.response_len, update_epochs=self.update_epochs,
                             lr=self.lr, beta=b, clip_eps=eps, reward_bias=bias,
                             device=self.device, seed=self.seed, progress=False)
            result = train(cfg, policy=copy.deepcopy(self._base), tokenizer=self.tokenizer,
                           ref_model=self._base, reward_fn=self._reward_fn(bias),
                           gold_fn=reward.gold_score, prompts=self._prompts)
        finally:
            self.run_button.disabled = False
        name, k = label, 2
        while name in self.runs:
            name, k = f"{label} #{k}", k + 1
        self.runs[name] = result.records
        last = result.records[-1]
        self.status.value = (f"{name}: gold {last['objective/gold_reward']:+.2f}, proxy "
                             f"{last['objective/proxy_reward']:+.2f}, KL {last['objective/kl']:.2f}")
        self.samples.value = "<b>last iteration's samples</b><br>" + "<br>".join(
            f"<i>{html.escape(s['prompt'])}</i>{html.escape(s['response'])} "
            f"(proxy {s['proxy']:+.2f}, gold {s['gold']:+.2f})" for s in last["samples"])
        self._redraw()
        return result.records

    def clear(self) -> None:
        """Forget every run."""
        self.runs.clear()
        self.samples.value = ""
        self._redraw()

    def _redraw(self) -> None:
        plot_rlhf_runs(self.runs, self.axes)
        show_in(self.output, self.figure)

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def rlhf_lab(**kwargs) -> RLHFLab:
    """The chapter-05 lab: `lab = rlhf_lab(); lab` shows sliders, Run and the curves.
    Keyword arguments go to `RLHFLab`."""
    return RLHFLab(**kwargs)
