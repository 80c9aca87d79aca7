"""The synthetic task of the speedrun: "993-7=?" answered "986", in chat format.

Problems are ``a op b`` with ``0 <= a < 10**digits``, ``0 <= b < 10**operand_digits``
and ``op`` in ``ops``; subtraction keeps ``a >= b``. The held-out test set
is drawn first and never appears in the training or preference data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    a: int
    op: str
    b: int

    @property
    def question(self) -> str:
        return f"{self.a}{self.op}{self.b}=?"

    @property
    def answer(self) -> str:
        return str(self.a + self.b if self.op == "+" else self.a - self.b)

    def prompt(self) -> list[dict[str, str]]:
        """The user turn, as conversational records hold it."""
        return [{"role": "user", "content": self.question}]

    def completion(self, text: str | None = None) -> list[dict[str, str]]:
        """The assistant turn answering ``text`` (default: the right answer)."""
        return [{"role": "assistant", "content": self.answer if text is None else text}]


def all_problems(digits: int, operand_digits: int, ops: str) -> list[Problem]:
    out = []
    for op in ops:
        for a in range(10**digits):
            for b in range(10**operand_digits):
                if op == "-" and b > a:
                    continue
                out.append(Problem(a, op, b))
    return out


def split_problems(settings: dict, seed: int) -> tuple[list[Problem], list[Problem]]:
    """(train, test): disjoint samples of every problem, of ``train_size`` and ``test_size``."""
    problems = all_problems(settings["digits"], settings["operand_digits"], settings["ops"])
    need = settings["train_size"] + settings["test_size"]
    if need > len(problems):
        raise ValueError(f"[arithmetic] train_size + test_size = {need} exceeds the {len(problems)} distinct problems "
                         f"of {settings['digits']}-digit {settings['ops']!r} {settings['operand_digits']}-digit")
    random.Random(seed).shuffle(problems)
    test = problems[: settings["test_size"]]
    train = problems[settings["test_size"] : need]
    return train, test


def sft_records(problems: list[Problem]) -> list[dict]:
    """Conversational prompt/completion records: the loss falls on the answer only."""
    return [{"prompt": p.prompt(), "completion": p.completion()} for p in problems]


def near_miss(problem: Problem, rng: random.Random) -> str:
    """A plausible wrong answer: a dropped carry/borrow, or the last digit off by one."""
    right = int(problem.answer)
    candidates = [right + 10, right - 10, right + 1, right - 1]
    candidates = [c for c in candidates if c >= 0 and c != right]
    return str(rng.choice(candidates))


def preference_records(problems: list[Problem], model_answers: list[str] | None, seed: int) -> list[dict]:
    """DPO pairs: the right answer chosen over a wrong one.

    The wrong one is the model's own answer where it was wrong (what DPO should
    push down), otherwise a near miss.
    """
    rng = random.Random(seed)
    records = []
    for i, p in enumerate(problems):
        own = model_answers[i] if model_answers is not None else None
        wrong = own if own is not None and own != p.answer and own.strip() else near_miss(p, rng)
        records.append({"prompt": p.prompt(), "chosen": p.completion(), "rejected": p.completion(wrong)})
    return records


def exact_match(predictions: list[str], problems: list[Problem]) -> float:
    """Fraction of predictions equal to the answer (surrounding whitespace ignored)."""
    if len(predictions) != len(problems):
        raise ValueError(f"predictions: expected {len(problems)}, got {len(predictions)}")
    if not problems:
        return 0.0
    return sum(pred.strip() == p.answer for pred, p in zip(predictions, problems)) / len(problems)
