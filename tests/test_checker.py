"""The exercise checker: right answers pass, wrong ones fail, unattempted ones are reported
without raising, and the answer is never printed before an attempt."""

import pytest
import torch

from ppo_core.course.checker import (NOT_ATTEMPTED, FunctionCheck, MultipleChoice, Numeric,
                              QuestionBank)
from ppo_core.losses import clipped_surrogate


@pytest.fixture
def bank():
    b = QuestionBank("test")
    b.add(MultipleChoice("mc", "Which mechanism bounds one update?",
                         {"a": "the KL penalty", "b": "the clip", "c": "the learning rate"},
                         "b", "SECRET-EXPLANATION", feedback={"a": "the penalty is soft"}))
    b.add(MultipleChoice("multi", "Select all", {"a": "x", "b": "y", "c": "z"}, {"a", "c"}, "both"))
    b.add(Numeric("num", "KL of a point mass?", 0.6931, "log 2", rtol=0.01))
    return b


def _surrogate_inputs(g):
    n = 12
    return (torch.randn(n, generator=g) * 0.4, torch.randn(n, generator=g) * 0.4,
            torch.randn(n, generator=g), 0.2), {}


def _function_check():
    return FunctionCheck("clip", "implement it", lambda *a: clipped_surrogate(*a)[0],
                         _surrogate_inputs, "REF-EXPLANATION", grad_wrt=(0,))


@pytest.mark.parametrize("answer", ["b", "B", "(b)", " b) "])
def test_right_multiple_choice_passes_and_explains(bank, capsys, answer):
    res = bank.check("mc", answer)
    assert res.correct and res.status == "correct"
    assert "SECRET-EXPLANATION" in capsys.readouterr().out


@pytest.mark.parametrize("answer", ["a", "c", "d", 3])
def test_wrong_multiple_choice_fails_without_revealing(bank, capsys, answer):
    res = bank.check("mc", answer)
    out = capsys.readouterr().out
    assert res.status == "incorrect" and not res.correct
    assert "SECRET-EXPLANATION" not in out and "the clip" not in out
    if answer == "a":
        assert "the penalty is soft" in out


def test_select_all_needs_exactly_the_right_set(bank):
    assert bank.check("multi", "ac", quiet=True).correct
    assert bank.check("multi", ["c", "a"], quiet=True).correct
    assert not bank.check("multi", "a", quiet=True).correct
    assert not bank.check("multi", "abc", quiet=True).correct


def test_single_answer_question_refuses_several_keys_without_feedback(bank, capsys):
    # "abc" would otherwise print the feedback of every wrong key and leave the right one
    # standing by elimination
    res = bank.check("mc", "abc")
    out = capsys.readouterr().out
    assert res.status == "incorrect" and "single option" in out
    assert "the penalty is soft" not in out and "SECRET" not in out


def test_numeric_tolerance(bank):
    assert bank.check("num", 0.69, quiet=True).correct
    assert bank.check("num", torch.tensor(0.6935), quiet=True).correct
    assert not bank.check("num", 0.75, quiet=True).correct
    assert "too high" in bank.check("num", 0.75, quiet=True).message
    assert "too low" in bank.check("num", -0.69, quiet=True).message
    assert not bank.check("num", "abc", quiet=True).correct
    assert not bank.check("num", float("nan"), quiet=True).correct


@pytest.mark.parametrize("answer", [None, ...])
def test_unattempted_is_reported_not_raised(bank, capsys, answer):
    res = bank.check("mc", answer)
    assert res.status == NOT_ATTEMPTED and not res.attempted
    out = capsys.readouterr().out
    assert "Not attempted yet" in out and "SECRET" not in out


def test_function_check_accepts_a_correct_implementation():
    def mine(logp, old_logp, adv, eps):
        r = torch.exp(logp - old_logp)
        return -torch.minimum(r * adv, torch.clamp(r, 1 - eps, 1 + eps) * adv).mean()
    assert _function_check().grade(mine).correct


def test_function_check_rejects_wrong_values_wrong_gradients_and_crashes():
    fc = _function_check()

    def no_min(logp, old_logp, adv, eps):                       # clips, but forgets the min
        r = torch.exp(logp - old_logp)
        return -(torch.clamp(r, 1 - eps, 1 + eps) * adv).mean()

    def grad_leaks(logp, old_logp, adv, eps):                   # right value, gradient flows
        r = torch.exp(logp - old_logp)              # through the clipped branch (a real bug)
        ref = torch.minimum(r * adv, torch.clamp(r, 1 - eps, 1 + eps) * adv)
        return -(r * adv + (ref - r * adv).detach()).mean()

    def crashes(logp, old_logp, adv, eps):
        raise RuntimeError("oops")

    for fn in (no_min, grad_leaks, crashes):
        res = fc.grade(fn)
        assert res.status == "incorrect", fn.__name__
    assert "gradient" in fc.grade(grad_leaks).message
    assert "RuntimeError" in fc.grade(crashes).message


def test_function_raising_not_implemented_is_not_attempted():
    def stub(*args):
        raise NotImplementedError
    assert _function_check().grade(stub).status == NOT_ATTEMPTED


def test_summary_all_correct_and_reveal(bank, capsys):
    assert not bank.all_correct()
    assert bank.summary(quiet=True)["mc"] == NOT_ATTEMPTED
    for qid, ans in [("mc", "b"), ("multi", "ac"), ("num", 0.6931)]:
        bank.check(qid, ans, quiet=True)
    assert bank.all_correct()
    capsys.readouterr()
    bank.reveal("mc")
    assert "the clip" in capsys.readouterr().out


def test_bad_registrations_and_unknown_ids_raise(bank):
    with pytest.raises(ValueError):
        MultipleChoice("x", "?", {"a": "1"}, "z", "")
    with pytest.raises(ValueError):
        Numeric("x", "?", float("inf"), "")
    with pytest.raises(ValueError, match="unknown question id"):
        bank.check("nope", "a")
    bank.add(Numeric("num", "replaced", 1.0, "one"))             # same id replaces
    assert bank.check("num", 1.0, quiet=True).correct


def test_repr_of_a_question_does_not_reveal_the_answer():
    q = MultipleChoice("mc", "prompt", {"a": "x", "b": "y"}, "b", "SECRET")
    n = Numeric("n", "prompt", 123.456, "SECRET")
    assert "SECRET" not in repr(q) and "'b'" not in repr(q).split("options")[0]
    assert "correct" not in repr(q) and "123.456" not in repr(n)


def test_summary_says_each_status_in_words(bank, capsys):
    # the marks alone (✅ ❌ ⏳) are empty boxes on a machine without an emoji font
    bank.check("mc", "b", quiet=True)
    bank.check("multi", "a", quiet=True)
    bank.summary()
    lines = {line.split()[-1]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "correct" in lines["mc"] and "incorrect" in lines["multi"]
    assert "not attempted" in lines["num"]


def test_free_text_shows_rubric_and_model_answer_once_written(capsys):
    from ppo_core.course.checker import SELF_CHECK, FreeText

    b = QuestionBank("free")
    b.add(FreeText("plan", "Write a plan", "MODEL ANSWER", ["names the objective", "sets β"],
                   min_words=5))
    b.add(Numeric("num", "one", 1.0, "one"))
    assert b.check("plan", None, quiet=True).status == "not_attempted"
    short = b.check("plan", "too short", quiet=True)
    assert short.status == "too_short" and not short.attempted
    assert "Too short" in str(short) and "Not attempted" not in str(short)
    assert "2 words so far" in short.message
    assert b.check("plan", 42, quiet=True).status == "incorrect"
    res = b.check("plan", "use DPO with beta 0.1 and red-team it", quiet=True)
    assert res.status == SELF_CHECK and not res.correct and res.attempted
    assert "MODEL ANSWER" in res.message and "[ ] sets β" in res.message
    b.check("num", 1.0, quiet=True)
    assert b.all_correct()                           # graded ones right, free text written
    b.summary()
    out = capsys.readouterr().out
    assert "1/1 correct, 1/1 written" in out and "compare" in out
    assert "MODEL ANSWER" not in repr(b.questions["plan"])
    with pytest.raises(ValueError, match="rubric"):
        FreeText("x", "?", "answer", [])
