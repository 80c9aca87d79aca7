"""The synthetic task of the speedrun: "738-469=?" answered "269", in chat format.

Problems are ``a op b`` with ``0 <= a < 10**digits``, ``0 <= b < 10**operand_digits``
and ``op`` in ``ops``; subtraction keeps ``a >= b``. The held-out test set
is drawn first and never appears in the training or preference data.
With operands of several digits the answers need carries and borrows across
digits, which a small model learns only partly in the SFT budget: the later
stages (DPO on its own mistakes, GRPO) have room to improve it.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

# Problem spaces up to this size are enumerated and shuffled; larger ones are sampled.
_ENUMERATE_LIMIT = 300_000


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


def count_problems(digits: int, operand_digits: int, ops: str) -> int:
    """How many distinct problems the settings allow (``all_problems`` without building them)."""
    na, nb = 10**digits, 10**operand_digits
    # a - b needs b <= a: every b below a when b's range covers a's, else the full triangle cut at nb.
    minus = sum(min(a + 1, nb) for a in range(na)) if "-" in ops else 0
    return na * nb * ops.count("+") + minus * ops.count("-")


def _sampled(settings: dict, need: int, seed: int) -> list[Problem]:
    """``need`` distinct problems drawn uniformly (by rejection) from a space too large to enumerate."""
    rng = random.Random(seed)
    ops, na, nb = settings["ops"], 10 ** settings["digits"], 10 ** settings["operand_digits"]
    seen: set[Problem] = set()
    out: list[Problem] = []
    while len(out) < need:
        p = Problem(rng.randrange(na), rng.choice(ops), rng.randrange(nb))
        if (p.op == "-" and p.b > p.a) or p in seen:
            continue
        seen.add(p)
        out.append(p)
    return out


def split_problems(settings: dict, seed: int) -> tuple[list[Problem], list[Problem]]:
    """(train, test): disjoint samples of every problem, of ``train_size`` and ``test_size``."""
    need = settings["train_size"] + settings["test_size"]
    total = count_problems(settings["digits"], settings["operand_digits"], settings["ops"])
    if need > total:
        raise ValueError(f"[arithmetic] train_size + test_size = {need} exceeds the {total} distinct problems "
                         f"of {settings['digits']}-digit {settings['ops']!r} {settings['operand_digits']}-digit")
    if total <= _ENUMERATE_LIMIT:
        problems = all_problems(settings["digits"], settings["operand_digits"], settings["ops"])
        random.Random(seed).shuffle(problems)
    else:
        problems = _sampled(settings, need, seed)
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
        wrong = own if is_own_mistake(own, p) else near_miss(p, rng)
        records.append({"prompt": p.prompt(), "chosen": p.completion(), "rejected": p.completion(wrong)})
    return records


def is_own_mistake(answer: str | None, problem: Problem) -> bool:
    """Whether a model's answer is wrong (an empty answer, ending the turn at once, is wrong too)."""
    return answer is not None and answer.strip() != problem.answer


def mistake_records(problems: list[Problem], model_answers: list[str], limit: int) -> list[dict]:
    """DPO pairs from the model's own mistakes only: for each problem it got wrong (up to ``limit``), the right
    answer chosen over the model's answer, exactly as the model wrote it."""
    if len(model_answers) != len(problems):
        raise ValueError(f"model_answers: expected {len(problems)}, got {len(model_answers)}")
    records = [{"prompt": p.prompt(), "chosen": p.completion(), "rejected": p.completion(a)}
               for p, a in zip(problems, model_answers) if is_own_mistake(a, p)]
    return records[:limit]


def grpo_records(problems: list[Problem]) -> list[dict]:
    """GRPO prompts with their right answers (the ``answer`` column reaches the reward functions)."""
    return [{"prompt": p.prompt(), "answer": p.answer} for p in problems]


def _content(completion) -> str:
    return completion[0]["content"] if isinstance(completion, list) else completion


def exact_match_reward(completions: list, answer: list[str], **_) -> list[float]:
    """GRPO reward: 1 where the completion is the right answer (surrounding whitespace ignored), else 0."""
    return [float(_content(c).strip() == a) for c, a in zip(completions, answer)]


_NUMBER = re.compile(r"-?\d{1,12}")


class FormatReward:
    """GRPO reward: 1 where the completion is a bare number closed by ``end_id`` (the turn's end), else 0."""

    __name__ = "format"

    def __init__(self, end_id: int) -> None:
        self.end_id = end_id

    def __call__(self, completions: list, completion_ids: list[list[int]], **_) -> list[float]:
        return [float(bool(ids) and ids[-1] == self.end_id and _NUMBER.fullmatch(_content(c).strip()) is not None)
                for c, ids in zip(completions, completion_ids)]


def exact_match(predictions: list[str], problems: list[Problem]) -> float:
    """Fraction of predictions equal to the answer (surrounding whitespace ignored)."""
    if len(predictions) != len(problems):
        raise ValueError(f"predictions: expected {len(problems)}, got {len(predictions)}")
    if not problems:
        return 0.0
    return sum(pred.strip() == p.answer for pred, p in zip(predictions, problems)) / len(problems)
