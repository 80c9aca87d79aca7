"""The speedrun's arithmetic task, checked against Python's own arithmetic on the question text."""

import operator
import random
import re

import pytest

from shardkit.speedrun import arithmetic

SETTINGS = {"digits": 2, "operand_digits": 1, "ops": "+-", "train_size": 150, "test_size": 30}


def solve(question: str) -> int:
    a, op, b = re.fullmatch(r"(\d+)([+-])(\d+)=\?", question).groups()
    return {"+": operator.add, "-": operator.sub}[op](int(a), int(b))


def test_every_problem_is_answered_right_and_nonnegative():
    problems = arithmetic.all_problems(2, 1, "+-")
    assert len(problems) == 100 * 10 + sum(min(a + 1, 10) for a in range(100))
    for p in problems:
        assert int(p.answer) == solve(p.question) >= 0


def test_train_and_test_are_disjoint_and_seeded():
    train, test = arithmetic.split_problems(SETTINGS, seed=3)
    assert len(train) == 150 and len(test) == 30
    assert not {p.question for p in train} & {p.question for p in test}
    assert arithmetic.split_problems(SETTINGS, seed=3) == (train, test)
    assert arithmetic.split_problems(SETTINGS, seed=4)[1] != test
    with pytest.raises(ValueError, match="exceeds"):
        arithmetic.split_problems({**SETTINGS, "train_size": 10_000}, seed=0)


def test_preference_pairs_reject_a_wrong_answer():
    _, test = arithmetic.split_problems(SETTINGS, seed=0)
    own = [p.answer if i % 3 == 0 else str(solve(p.question) + 7) for i, p in enumerate(test)]
    records = arithmetic.preference_records(test, own, seed=0)
    for i, (p, r) in enumerate(zip(test, records)):
        assert r["prompt"] == [{"role": "user", "content": p.question}]
        assert int(r["chosen"][0]["content"]) == solve(p.question)
        rejected = r["rejected"][0]["content"]
        assert int(rejected) != solve(p.question)
        if i % 3:
            assert rejected == own[i]  # the model's own wrong answer is the one rejected
    rng = random.Random(0)
    assert all(arithmetic.near_miss(p, rng) != p.answer for p in test)


def test_exact_match():
    _, test = arithmetic.split_problems(SETTINGS, seed=0)
    predictions = [f" {p.answer}\n" if i < 10 else "x" for i, p in enumerate(test)]
    assert arithmetic.exact_match(predictions, test) == pytest.approx(10 / 30)
    with pytest.raises(ValueError, match="predictions"):
        arithmetic.exact_match(predictions[:-1], test)
