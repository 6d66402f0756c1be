"""Answer keys of the exercise notebooks, one module per notebook in `exercises/` (issue 16).

The keys live here, not in the notebooks, so that a learner reads the questions without the
answers one click away. A notebook loads its questions with one line,

    bank = load("02")        # exercises/02_trust_regions.ipynb's questions, into the checker

and then calls `check(qid, answer)` as before; `bank.reveal(qid)` prints an answer and its
explanation for a learner who is stuck. The solution notebooks load the same keys.

Each module defines `questions()`, the notebook's questions in notebook order, and keeps its
multiple-choice questions as module-level constants (tests/test_exercise_balance.py reads
them). Answers that depend on data (ex04: the tiny GPT-2; ex06: the logs of chapter 06; ex07:
the runs of chapter 07) are
computed when `questions()` runs, so they stay right when the model or the logs are rebuilt.

| notebook                             | module               |
|--------------------------------------|----------------------|
| exercises/01_bandits.ipynb           | ex01_bandits         |
| exercises/02_trust_regions.ipynb     | ex02_trust_regions   |
| exercises/03_cartpole.ipynb          | ex03_cartpole        |
| exercises/04_language_models.ipynb   | ex04_language_models |
| exercises/05_rlhf.ipynb              | ex05_rlhf            |
| exercises/06_diagnosis.ipynb         | ex06_diagnosis       |
| exercises/07_objectives.ipynb        | ex07_objectives      |
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from ..checker import BANK, QuestionBank

__all__ = ["MODULES", "module", "load"]

#: notebook number -> key module
MODULES = {"01": "ex01_bandits", "02": "ex02_trust_regions", "03": "ex03_cartpole",
           "04": "ex04_language_models", "05": "ex05_rlhf", "06": "ex06_diagnosis",
           "07": "ex07_objectives"}


def module(number: str | int) -> ModuleType:
    """The key module of exercise notebook `number` ("02", 2 or "ex02_trust_regions")."""
    key = str(number)
    key = key.zfill(2) if key.isdigit() else key
    name = MODULES.get(key, key)
    if name not in MODULES.values():
        raise ValueError(f"no exercise notebook {number!r}; known: {sorted(MODULES)}")
    return import_module(f"{__name__}.{name}")


def load(number: str | int, bank: QuestionBank | None = None) -> QuestionBank:
    """Register the questions of exercise notebook `number` in `bank` (default: the
    checker's default bank, which `check`, `summary` and `reveal` use); returns the bank.
    Loading again replaces the questions and forgets earlier answers."""
    bank = BANK if bank is None else bank
    for question in module(number).questions():
        bank.add(question)
    return bank
