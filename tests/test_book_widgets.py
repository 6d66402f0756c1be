"""The website's widget snapshots (`ppo_core.course.book.widget_snapshot`): what a saved
ipywidgets state shows without a kernel. The site build itself is tested in
tests/browser/test_book.py."""

from ppo_core.course.book import widget_snapshot

PNG = {"output_type": "display_data", "data": {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"},
       "metadata": {}}


def _model(name, **state):
    return {"model_name": name, "model_module": "@jupyter-widgets/controls", "state": state}


def test_a_progress_bar_becomes_its_last_line():
    state = {"bar": _model("HBoxModel", children=["IPY_MODEL_l", "IPY_MODEL_p", "IPY_MODEL_r"]),
             "l": _model("HTMLModel", value="seeds: 100%"),
             "p": _model("FloatProgressModel", value=2, max=4),
             "r": _model("HTMLModel", value=" 2/4 [00:09&lt;00:09, 4.5s/it]")}
    shot = widget_snapshot(state, "bar")
    assert shot["kind"] == "progress"
    assert shot["text"] == ["seeds: 100% █████····· 2/4 [00:09<00:09, 4.5s/it]"]


def test_a_lab_shows_its_settings_status_and_last_figure():
    state = {"box": _model("VBoxModel", children=["IPY_MODEL_eps", "IPY_MODEL_beta", "IPY_MODEL_run",
                                                  "IPY_MODEL_status", "IPY_MODEL_out"]),
             "eps": _model("SelectionSliderModel", description="ε (clip)", index=2,
                           _options_labels=["off", "0.1", "0.2"]),
             "beta": _model("FloatSliderModel", description="β", value=0.1),
             "run": _model("ButtonModel", description="Run"),
             "status": _model("HTMLModel", value="<b>ε=0.2</b>: final return 500"),
             "out": {"model_name": "OutputModel", "state": {"outputs": [PNG]}}}
    shot = widget_snapshot(state, "box")
    assert shot["kind"] == "lab"
    assert shot["settings"] == ["ε (clip) = 0.2", "β = 0.1"]              # no button
    assert shot["text"] == ["ε=0.2: final return 500"]
    assert shot["outputs"] == [PNG]


def test_a_widget_missing_from_the_state_shows_nothing():
    assert widget_snapshot({}, "nope")["kind"] == "gone"
