"""The chapter 01–02 labs, driven headlessly: slider changes run real training and
redraw; out-of-range values are refused; a diverged run says so on the figure."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from ppo_core.course.widgets import bandit_lab, objective_explorer


def _pixels(fig):
    canvas = FigureCanvasAgg(fig)          # the lab closed its pyplot handle; render directly
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts] + \
           ([fig._suptitle.get_text()] if fig._suptitle else [])


@pytest.fixture(scope="module")
def lab():
    return bandit_lab()


def test_slider_change_runs_real_training_and_redraws(lab, monkeypatch):
    import ppo_core.trainers.bandits as bandits
    calls = []
    real = bandits.ppo_objective
    monkeypatch.setattr(bandits, "ppo_objective", lambda *a, **k: calls.append(1) or real(*a, **k))
    before_runs, before_fig, before_records = lab.n_runs, lab.figure, lab.records
    before_px = _pixels(before_fig)
    lab.sliders["lr"].value = 5.0                          # one slider move = one real run
    assert lab.n_runs == before_runs + 1
    assert len(calls) == lab.config.updates * lab.sliders["epochs"].value
    assert lab.records is not before_records and len(lab.records) == lab.config.updates
    assert lab.records[-1]["bandit/p_best"] != before_records[-1]["bandit/p_best"]
    assert lab.figure is not before_fig
    assert not np.array_equal(_pixels(lab.figure), before_px)


def test_every_slider_reaches_the_trainer(lab):
    assert lab.set(beta=0.7, clip_eps="off", lr=0.5, epochs=3)
    cfg = lab.current_config()
    assert (cfg.beta, cfg.clip_eps, cfg.lr, cfg.update_epochs) == (0.7, None, 0.5, 3)
    rec = lab.records[-1]
    assert rec["objective/beta"] == pytest.approx(0.7) and rec["losses/clipfrac"] == 0.0
    assert lab.set(clip_eps=0.1, beta=0.0)
    assert lab.records[-1]["objective/beta"] == 0.0


@pytest.mark.parametrize("values", [dict(lr=1000.0), dict(lr=0.0), dict(epochs=40),
                                    dict(epochs=2.5), dict(beta=-1.0), dict(clip_eps=0.7),
                                    dict(gamma=0.9), dict(lr="fast")])
def test_out_of_range_values_are_refused_with_a_message(lab, values):
    runs, settings = lab.n_runs, lab.values()
    assert lab.set(**values) is False
    assert lab.n_runs == runs and lab.values() == settings
    assert "refused" in lab.message.value or "unknown" in lab.message.value


def test_a_diverging_run_says_so_on_the_figure(lab):
    assert lab.set(clip_eps="off", beta=0.0, lr=100.0, epochs=16)
    assert lab.records[-1]["bandit/diverged"] == 1
    assert any("DIVERGED" in t for t in _texts(lab.figure))
    assert "DIVERGED" in lab.message.value and "clip" in lab.message.value
    assert lab.set(clip_eps=0.2, lr=1.0, epochs=4)        # back to a healthy run
    assert not any("DIVERGED" in t for t in _texts(lab.figure))


def test_objective_explorer_redraws_on_each_slider():
    ex = objective_explorer()
    px = _pixels(ex.figure)
    ex.sliders["beta"].value = 1.0
    assert ex.n_runs == 2 and not np.array_equal(_pixels(ex.figure), px)
    px = _pixels(ex.figure)
    ex.sliders["clip_eps"].value = "off"
    assert ex.n_runs == 3 and not np.array_equal(_pixels(ex.figure), px)
    assert ex.set(beta=9.0) is False and "refused" in ex.message.value


def test_labs_display_as_widgets():
    ex = objective_explorer()
    bundle = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
