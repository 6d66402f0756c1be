"""The exercise checker shared by every exercise notebook (introduced with chapter 01).

A question is registered once, with its correct answer and an explanation; the learner's
notebook calls `check(question_id, answer)`. The checker says whether the answer is right
and *then* explains why. It never shows the correct answer before an attempt, and an
unattempted exercise (answer left as `None` or `...`, or a function that still raises
`NotImplementedError`) is reported as "not attempted yet" without raising, so an exercise
notebook as the learner receives it runs top to bottom under nbval.

API
---
Question types (all take `qid`, the id used by `check`, and `explanation`, shown after a
correct answer; `hint`, optional, is shown after a wrong one):

    MultipleChoice(qid, prompt, options, correct, explanation, feedback=None, hint="")
        options: {"a": "text", "b": "text", ...}; correct: one key (or a set of keys for
        "select all that apply", answered with a string such as "ac" or a list).
        feedback: optional {key: why this option is wrong}, shown after that wrong answer.
        Answers are case-insensitive; "b", "B", "(b)" and "b)" are the same answer.
    Numeric(qid, prompt, value, explanation, atol=0.0, rtol=1e-2, hint="", unit="")
        right when |answer − value| <= atol + rtol·|value|.
    FunctionCheck(qid, prompt, reference, make_inputs, explanation, trials=20, atol=1e-5,
                  rtol=1e-4, grad_wrt=(), seed=0, hint="")
        compares a learner's function with `reference` on `trials` random inputs:
        `make_inputs(g)` gets a `torch.Generator` and returns `(args, kwargs)` (or just a
        tuple of args). Outputs may be tensors, numbers, or tuples/lists of them (the
        learner's output must have the same structure). `grad_wrt` lists positional
        argument indices whose gradients (of a scalar output) must also match; use it
        where a loss is right in value and wrong in gradient (e.g. a clip that still
        passes gradient). On the first mismatch the checker shows that input and both
        outputs (the reference output for a *failed* attempt is not the answer to write).
    FreeText(qid, prompt, model_answer, rubric, min_words=40)
        a written answer that no program can grade (a design, a blueprint). Once the learner
        has written at least `min_words` words, `check` shows the rubric (the points a good
        answer covers) and a model answer to compare against; the status is "self_check"
        ("compare"), never "correct".

Registries:

    QuestionBank(name)     .add(question) -> question, .check(qid, answer) -> Result,
                           .summary() -> dict of statuses (and prints a one-line table),
                           .all_correct() -> bool, .reveal(qid) prints answer + explanation.
    BANK                   the default bank; the module-level `register(question)`,
                           `check(qid, answer)`, `summary()`, `all_correct()` and
                           `reveal(qid)` act on it.

Questions can be defined in the notebook itself (`register(MultipleChoice(...))`) or in a
module that the notebook imports; the exercise notebooks keep theirs out of sight in
`ppo_core.course.exercise_keys` (`bank = ppo_core.course.exercise_keys.load("02")`). Registering the same
id twice replaces the question (re-running a notebook cell is harmless).

`check` prints its verdict and returns a `Result` with `.status` one of "correct",
"incorrect", "not_attempted" (and "self_check" for a written `FreeText` answer), and
`.correct` (bool). A solution notebook ends with `assert all_correct()` (every graded
question correct, every free-text one written); a learner's notebook ends with `summary()`.

Example:

    from ppo_core.course.checker import MultipleChoice, FunctionCheck, check, register, summary
    register(MultipleChoice("q_clip", "Which mechanism bounds one update?",
                            {"a": "the KL penalty", "b": "the clip"}, "b",
                            explanation="the clip acts per sample on r(θ) ...",
                            feedback={"a": "the penalty is soft: look at the per-update KL"}))
    answer = None                      # the learner replaces None
    check("q_clip", answer);           # -> "[q_clip] ⏳ Not attempted yet. ..."

End the registration cell and `check(...)` lines with `;` so that the notebook does not echo
the returned object (a question's repr never contains its answer or explanation anyway).
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

__all__ = ["MultipleChoice", "Numeric", "FunctionCheck", "FreeText", "QuestionBank", "Result",
           "BANK", "register", "check", "summary", "all_correct", "reveal", "NOT_ATTEMPTED",
           "SELF_CHECK"]

NOT_ATTEMPTED = "not_attempted"
SELF_CHECK = "self_check"          # a written answer, to compare with the rubric (not graded)
TOO_SHORT = "too_short"            # a written answer begun, below its minimum length
_MARK = {"correct": "✅ Correct.", "incorrect": "❌ Not quite.",
         NOT_ATTEMPTED: "⏳ Not attempted yet.", SELF_CHECK: "📝 Written: compare it.",
         TOO_SHORT: "✏️ Too short to compare yet."}
# the summary's words beside its marks: without an emoji font the marks are empty boxes
_WORD = {"correct": "correct", "incorrect": "incorrect", NOT_ATTEMPTED: "not attempted",
         SELF_CHECK: "compare", TOO_SHORT: "too short"}


@dataclass
class Result:
    """Outcome of one `check`: `status` is "correct", "incorrect" or "not_attempted"."""

    qid: str
    status: str
    message: str

    @property
    def correct(self) -> bool:
        return self.status == "correct"

    @property
    def attempted(self) -> bool:
        return self.status not in (NOT_ATTEMPTED, TOO_SHORT)

    def __str__(self) -> str:
        return f"[{self.qid}] {_MARK[self.status]} {self.message}".rstrip()

    def __repr__(self) -> str:
        return f"Result(qid={self.qid!r}, status={self.status!r})"


def _is_unattempted(answer) -> bool:
    return answer is None or answer is Ellipsis


def _wrap(text: str) -> str:
    return "\n".join(textwrap.fill(p, 92) for p in text.strip().split("\n"))


# ------------------------------------------------------------------ question types

@dataclass
class MultipleChoice:
    """One (or several, "select all") correct keys among `options`. See the module docstring."""

    qid: str
    prompt: str
    options: dict
    correct: Any = field(repr=False)          # never shown by repr(): it would spoil the answer
    explanation: str = field(repr=False)
    feedback: dict | None = field(default=None, repr=False)
    hint: str = field(default="", repr=False)

    def __post_init__(self):
        if not self.options:
            raise ValueError(f"options must be a non-empty dict, got {self.options!r}")
        self.options = {str(k).lower(): v for k, v in self.options.items()}
        self._correct = self._keys(self.correct)
        if self._correct is None or not self._correct <= set(self.options):
            raise ValueError(f"correct must be among the option keys {sorted(self.options)}, "
                             f"got {self.correct!r}")
        self.feedback = {str(k).lower(): v for k, v in (self.feedback or {}).items()}

    def _keys(self, answer) -> set | None:
        """Normalised set of option keys, or None if the answer names no option."""
        if isinstance(answer, (list, tuple, set, frozenset)):
            parts = [str(a) for a in answer]
        else:
            s = str(answer).strip().lower().strip("()").rstrip(").").strip()
            if s in getattr(self, "options", {}):
                parts = [s]
            else:
                parts = [c for c in s.replace(",", " ").replace("(", " ").replace(")", " ").split()]
                if len(parts) == 1 and all(c in self.options for c in parts[0]):
                    parts = list(parts[0])
        keys = {p.strip().lower() for p in parts if p.strip()}
        return keys if keys and keys <= set(self.options) else None

    def grade(self, answer) -> Result:
        keys = self._keys(answer)
        if keys is None:
            return Result(self.qid, "incorrect",
                          f"{answer!r} is not one of the options {sorted(self.options)}.")
        if keys == self._correct:
            return Result(self.qid, "correct", _wrap(self.explanation))
        if len(self._correct) == 1 and len(keys) > 1:
            # one right option: feedback on each wrong key of a multi-key answer would let
            # the learner find the answer by elimination ("abcd" -> the key with no feedback)
            return Result(self.qid, "incorrect",
                          f"This question has one answer; choose a single option from "
                          f"{sorted(self.options)}.")
        msgs = [self.feedback[k] for k in sorted(keys) if k in self.feedback]
        if len(self._correct) > 1:
            msgs.append("Several options are right here; select all of them and only them.")
        if self.hint:
            msgs.append("Hint: " + self.hint)
        return Result(self.qid, "incorrect", _wrap("\n".join(msgs) or "Try again."))

    def answer_text(self) -> str:
        return ", ".join(f"({k}) {self.options[k]}" for k in sorted(self._correct))


@dataclass
class Numeric:
    """A number, right within `atol + rtol·|value|`. See the module docstring."""

    qid: str
    prompt: str
    value: float = field(repr=False)
    explanation: str = field(repr=False)
    atol: float = 0.0
    rtol: float = 1e-2
    hint: str = field(default="", repr=False)
    unit: str = ""

    def __post_init__(self):
        if not math.isfinite(float(self.value)):
            raise ValueError(f"value must be finite, got {self.value!r}")
        if self.atol < 0 or self.rtol < 0 or self.atol + self.rtol * abs(float(self.value)) == 0:
            raise ValueError(f"tolerances must be >= 0 and give a non-zero band around "
                             f"value={self.value!r}, got atol={self.atol}, rtol={self.rtol}")

    def grade(self, answer) -> Result:
        if isinstance(answer, torch.Tensor) and answer.numel() == 1:
            answer = answer.item()
        try:
            x = float(answer)
        except (TypeError, ValueError):
            return Result(self.qid, "incorrect", f"expected a number, got {answer!r}.")
        if not math.isfinite(x):
            return Result(self.qid, "incorrect", f"{x} is not a finite number.")
        if abs(x - self.value) <= self.atol + self.rtol * abs(self.value):
            return Result(self.qid, "correct", _wrap(self.explanation))
        msg = f"Your value is {'too high' if x > self.value else 'too low'}."
        if self.hint:
            msg += " Hint: " + self.hint
        return Result(self.qid, "incorrect", _wrap(msg))

    def answer_text(self) -> str:
        return f"{self.value:g} {self.unit}".strip()


@dataclass
class FunctionCheck:
    """A learner's function compared with `reference` on random inputs (module docstring)."""

    qid: str
    prompt: str
    reference: Callable = field(repr=False)
    make_inputs: Callable = field(repr=False)
    explanation: str = field(repr=False)
    trials: int = 20
    atol: float = 1e-5
    rtol: float = 1e-4
    grad_wrt: tuple = ()
    seed: int = 0
    hint: str = ""

    def __post_init__(self):
        if not callable(self.reference) or not callable(self.make_inputs):
            raise ValueError("reference and make_inputs must be callables")
        if int(self.trials) < 1:
            raise ValueError(f"trials must be >= 1, got {self.trials!r}")

    def _inputs(self, g):
        made = self.make_inputs(g)
        if isinstance(made, tuple) and len(made) == 2 and isinstance(made[1], dict) \
                and isinstance(made[0], (tuple, list)):
            return tuple(made[0]), dict(made[1])
        return (tuple(made) if isinstance(made, (tuple, list)) else (made,)), {}

    def _call(self, fn, args, kwargs):
        """Call with fresh copies of the inputs; returns (output, grads)."""
        args = [a.detach().clone().requires_grad_(i in self.grad_wrt and a.is_floating_point())
                if isinstance(a, torch.Tensor) else a for i, a in enumerate(args)]
        out = fn(*args, **kwargs)
        grads = []
        if self.grad_wrt:
            scalar = out[0] if isinstance(out, (tuple, list)) else out
            if not isinstance(scalar, torch.Tensor) or scalar.numel() != 1 \
                    or not scalar.requires_grad:
                raise _Mismatch("the output (its first element, if a tuple) must be a scalar "
                                "tensor that depends on the inputs, so that it can be "
                                "differentiated")
            wrt = [args[i] for i in self.grad_wrt]
            grads = torch.autograd.grad(scalar, wrt, allow_unused=True)
            grads = [torch.zeros_like(w) if gr is None else gr for gr, w in zip(grads, wrt)]
        return out, grads

    def _compare(self, got, want, where: str):
        if isinstance(want, (tuple, list)):
            if not isinstance(got, (tuple, list)) or len(got) != len(want):
                raise _Mismatch(f"{where}: expected a tuple of {len(want)} values, got "
                                f"{type(got).__name__}")
            for i, (a, b) in enumerate(zip(got, want)):
                self._compare(a, b, f"{where}[{i}]")
            return
        if isinstance(want, dict):
            return                                # statistics dicts are not graded
        try:
            a = torch.as_tensor(got, dtype=torch.float64).detach()
        except (TypeError, ValueError, RuntimeError):
            raise _Mismatch(f"{where}: expected a tensor or number, got {type(got).__name__}")
        b = torch.as_tensor(want, dtype=torch.float64).detach()
        if a.shape != b.shape:
            if a.numel() == b.numel() == 1:
                a, b = a.reshape(()), b.reshape(())
            else:
                raise _Mismatch(f"{where}: shape {tuple(a.shape)}, expected {tuple(b.shape)}")
        if not torch.allclose(a, b, atol=self.atol, rtol=self.rtol, equal_nan=False):
            detail = ""
            if a.dim() and a.numel() > 8:                 # the display shows only 4 values
                bad = ~torch.isclose(a, b, atol=self.atol, rtol=self.rtol, equal_nan=False)
                i = tuple(int(j) for j in bad.nonzero()[0])
                detail = (f" (first at index {list(i) if len(i) > 1 else i[0]}: yours "
                          f"{a[i].item():.4g}, expected {b[i].item():.4g})")
            raise _Mismatch(f"{where} differs{detail}", a, b)

    def grade(self, fn) -> Result:
        if not callable(fn):
            return Result(self.qid, "incorrect", f"expected a function, got {type(fn).__name__}.")
        g = torch.Generator().manual_seed(self.seed)
        for t in range(int(self.trials)):
            args, kwargs = self._inputs(g)
            want, want_g = self._call(self.reference, args, kwargs)
            try:
                got, got_g = self._call(fn, args, kwargs)
            except NotImplementedError:
                return Result(self.qid, NOT_ATTEMPTED,
                              "The function still raises NotImplementedError; fill it in.")
            except _Mismatch as e:
                return Result(self.qid, "incorrect", str(e))
            except Exception as e:                                   # learner's bug: report it
                return Result(self.qid, "incorrect",
                              f"Your function raised {type(e).__name__}: {e}")
            try:
                self._compare(got, want, "output")
                for i, a, b in zip(self.grad_wrt, got_g, want_g):
                    self._compare(a, b, f"gradient w.r.t. argument {i}")
            except _Mismatch as e:
                return Result(self.qid, "incorrect", self._report(e, t, args, kwargs))
        return Result(self.qid, "correct",
                      _wrap(f"Matches on {self.trials} random inputs. " + self.explanation))

    def _report(self, e, trial, args, kwargs) -> str:
        with torch.no_grad():
            shown = ", ".join(_short(a) for a in args)
            if kwargs:
                shown += ", " + ", ".join(f"{k}={_short(v)}" for k, v in kwargs.items())
        msg = f"On random input #{trial + 1}: {e.args[0]}.\n  input: ({shown})"
        if len(e.args) == 3:
            msg += f"\n  yours:    {_short(e.args[1])}\n  expected: {_short(e.args[2])}"
        if self.hint:
            msg += "\nHint: " + self.hint
        return msg

    def answer_text(self) -> str:
        return f"see {getattr(self.reference, '__module__', '')}." \
               f"{getattr(self.reference, '__qualname__', repr(self.reference))}"


class _Mismatch(Exception):
    pass


@dataclass
class FreeText:
    """A written answer compared, by the learner, with a rubric and a model answer."""

    qid: str
    prompt: str
    model_answer: str = field(repr=False)
    rubric: tuple = field(repr=False)
    min_words: int = 40

    def __post_init__(self):
        if not self.rubric or not all(isinstance(r, str) and r for r in self.rubric):
            raise ValueError(f"rubric must be a non-empty list of points, got {self.rubric!r}")
        self.rubric = tuple(self.rubric)

    @property
    def explanation(self) -> str:                 # what `reveal` prints after the answer
        return "A good answer covers:\n" + "\n".join(f"  [ ] {r}" for r in self.rubric)

    def grade(self, answer) -> Result:
        if not isinstance(answer, str):
            return Result(self.qid, "incorrect", f"expected your answer as text (a string), got "
                                                 f"{type(answer).__name__}.")
        n = len(answer.split())
        if n < self.min_words:
            return Result(self.qid, TOO_SHORT if n else NOT_ATTEMPTED,
                          f"{n} words so far: write at least {self.min_words}, then run the cell "
                          f"again.")
        return Result(self.qid, SELF_CHECK,
                      "Nobody grades this but you. Tick each point your answer covers, then "
                      "read the model answer.\n" + self.explanation + "\nModel answer:\n"
                      + _wrap(self.model_answer))

    def answer_text(self) -> str:
        return "(a model answer)\n" + _wrap(self.model_answer)


def _short(x) -> str:
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.numel() <= 8:
            return str([round(v, 4) for v in x.flatten().tolist()]) if x.dim() else f"{x.item():.4g}"
        return f"tensor{tuple(x.shape)}[{', '.join(f'{v:.3g}' for v in x.flatten()[:4].tolist())}, …]"
    return repr(x)


# ------------------------------------------------------------------ registries

class QuestionBank:
    """A named set of questions and the learner's latest result for each."""

    def __init__(self, name: str = "default"):
        self.name = name
        self.questions: dict[str, Any] = {}
        self.results: dict[str, Result] = {}

    def add(self, question):
        if not hasattr(question, "grade") or not getattr(question, "qid", ""):
            raise ValueError(f"question must be a MultipleChoice, Numeric, FunctionCheck or FreeText "
                             f"with a qid, got {question!r}")
        self.questions[question.qid] = question
        self.results.pop(question.qid, None)
        return question

    def check(self, qid: str, answer, quiet: bool = False) -> Result:
        """Grade `answer` for question `qid`, print the verdict, return the `Result`."""
        if qid not in self.questions:
            raise ValueError(f"unknown question id {qid!r}; registered: {sorted(self.questions)}")
        q = self.questions[qid]
        if _is_unattempted(answer):
            res = Result(qid, NOT_ATTEMPTED, "Replace the None with your answer and re-run.")
        else:
            res = q.grade(answer)
        self.results[qid] = res
        if not quiet:
            print(res)
        return res

    def summary(self, quiet: bool = False) -> dict:
        """Status of every registered question ("not_attempted" if never checked)."""
        table = {qid: (self.results[qid].status if qid in self.results else NOT_ATTEMPTED)
                 for qid in self.questions}
        if not quiet:
            n_ok = sum(s == "correct" for s in table.values())
            n_free = sum(isinstance(q, FreeText) for q in self.questions.values())
            print(f"{self.name}: {n_ok}/{len(table) - n_free} correct"
                  + (f", {sum(s == SELF_CHECK for s in table.values())}/{n_free} written "
                     f"(compare them with the rubric)" if n_free else ""))
            for qid, s in table.items():
                print(f"  {_MARK[s].split()[0]} {_WORD[s]:<13} {qid}")
        return table

    def all_correct(self) -> bool:
        """Every graded question correct and every free-text one written."""
        table = self.summary(quiet=True)
        return bool(self.questions) and all(
            s == (SELF_CHECK if isinstance(self.questions[q], FreeText) else "correct")
            for q, s in table.items())

    def reveal(self, qid: str) -> str:
        """Print (and return) the correct answer and its explanation: only on request."""
        if qid not in self.questions:
            raise ValueError(f"unknown question id {qid!r}")
        q = self.questions[qid]
        text = f"[{qid}] answer: {q.answer_text()}\n{_wrap(q.explanation)}"
        print(text)
        return text


BANK = QuestionBank("exercises")


def register(question):
    """Add `question` to the default bank (replacing one with the same id); returns it."""
    return BANK.add(question)


def check(qid: str, answer, quiet: bool = False) -> Result:
    """Grade `answer` for question `qid` in the default bank; prints and returns a Result."""
    return BANK.check(qid, answer, quiet)


def summary(quiet: bool = False) -> dict:
    return BANK.summary(quiet)


def all_correct() -> bool:
    return BANK.all_correct()


def reveal(qid: str) -> str:
    return BANK.reveal(qid)
