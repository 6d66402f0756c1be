"""Every notebook that trains or samples fixes torch's thread count in its first code cell.

A sum over a tensor is split across threads, so its rounding — and with it a sampled token, a
seed's trajectory and whether an assert's margin holds — can depend on how many threads torch
picks on the machine at hand (issue 14: chapter 05 failed on one machine and passed on another).
The notebooks therefore set the count themselves before anything trains; this test keeps it so.
"""

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "chapters").glob("[0-9][0-9]_*.ipynb")) + \
    sorted((REPO / "exercises").glob("[0-9][0-9]_*.ipynb"))
#: code that trains, samples or runs a lab (what makes a notebook's numbers thread-dependent)
TRAINS = re.compile(r"\btrain\w*\(|sample_responses\(|Lab\(|\.generate\(|\.backward\(|"
                    r"optim\.\w+\(|evaluate_\w+\(|record_video\(")


def _code_cells(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_notebook_that_trains_fixes_the_thread_count_first(path):
    cells = _code_cells(path)
    trains = [(i, m.start()) for i, c in enumerate(cells) for m in [TRAINS.search(c)] if m]
    if not trains:
        pytest.skip("trains and samples nothing")
    fixed = [(i, m.start()) for i, c in enumerate(cells)
             for m in [re.search(r"torch\.set_num_threads\(\s*[12]\s*\)", c)] if m]
    assert fixed, f"{path.name} trains (code cell {trains[0][0]}) but never calls torch.set_num_threads"
    assert fixed[0] < trains[0], (f"{path.name}: the thread count is fixed at code cell {fixed[0][0]}, "
                                  f"after training starts (code cell {trains[0][0]})")


def test_the_pattern_sees_training():
    """The check is not vacuous: chapters 03 and 05 train, and are recognised as such."""
    for name in ("03_ppo_on_cartpole.ipynb", "05_rlhf_with_ppo.ipynb"):
        assert any(TRAINS.search(c) for c in _code_cells(REPO / "chapters" / name)), name
