"""The exercises' multiple-choice questions do not give their answers away (issue 16):
the correct letters spread over the options, the correct option is the longest hardly more
often than chance would make it, and every notebook shows the options its key grades."""

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from ppo_core.course.checker import MultipleChoice, QuestionBank
from ppo_core.course.exercise_keys import MODULES, load, module

ROOT = Path(__file__).resolve().parent.parent


def _multiple_choice():
    """(notebook number, question) for every MultipleChoice of every key module."""
    return [(number, q) for number in MODULES for q in vars(module(number)).values()
            if isinstance(q, MultipleChoice)]


QUESTIONS = _multiple_choice()


def _correct_key(q):
    assert len(q._correct) == 1, f"{q.qid}: one correct option expected"
    return next(iter(q._correct))


def test_every_key_module_has_multiple_choice_questions():
    assert {number for number, _ in QUESTIONS} == set(MODULES)
    assert len(QUESTIONS) >= 12


def test_no_letter_holds_more_than_40_percent_of_the_correct_answers():
    letters = Counter(_correct_key(q) for _, q in QUESTIONS)
    worst, count = letters.most_common(1)[0]
    assert count <= 0.40 * len(QUESTIONS), \
        f"{worst!r} is correct in {count} of {len(QUESTIONS)}: {letters}"


def test_correct_option_is_rarely_the_strictly_longest():
    longest = [q.qid for _, q in QUESTIONS
               if all(len(q.options[_correct_key(q)]) > len(t)
                      for k, t in q.options.items() if k != _correct_key(q))]
    assert len(longest) <= 0.35 * len(QUESTIONS), f"correct and longest: {longest}"


def _plain(text):
    """Markdown to comparable text: no emphasis or code marks, one space between words."""
    return " ".join(re.sub(r"[*`]", "", text).split())


def _notebooks(number):
    name = MODULES[number].split("_", 1)[1]
    return [ROOT / "exercises" / f"{number}_{name}.ipynb",
            ROOT / "exercises" / "solutions" / f"{number}_{name}.ipynb"]


@pytest.mark.parametrize("number, q", QUESTIONS, ids=[q.qid for _, q in QUESTIONS])
def test_notebooks_show_the_options_that_the_key_grades(number, q):
    # a letter moved in the key but not in the notebook would grade a different answer
    for path in _notebooks(number):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        shown = _plain(" ".join("".join(c["source"]) for c in cells
                                if c["cell_type"] == "markdown"))
        assert any(f'check("{q.qid}"' in "".join(c["source"]).replace("'", '"')
                   for c in cells if c["cell_type"] == "code"), f"{path.name} never checks {q.qid}"
        for key, option in q.options.items():
            assert _plain(f"({key}) {option}") in shown, f"{path.name}: {q.qid} ({key}) {option!r}"


@pytest.mark.parametrize("number", ["03", "05"])
def test_load_registers_a_notebooks_questions_and_reveal_shows_an_answer(number, capsys):
    bank = load(number, QuestionBank("test"))
    assert [q.qid for q in module(number).questions()] == list(bank.questions)
    qid = next(q.qid for _, q in QUESTIONS if q.qid in bank.questions)
    assert bank.check(qid, None, quiet=True).status == "not_attempted"
    bank.reveal(qid)
    q = bank.questions[qid]
    assert f"({_correct_key(q)}) {q.options[_correct_key(q)]}" in capsys.readouterr().out
