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


def test_problem_counts_and_sampled_splits():
    for digits, operand_digits in ((2, 1), (2, 2), (3, 2)):
        assert arithmetic.count_problems(digits, operand_digits, "+-") == len(
            arithmetic.all_problems(digits, operand_digits, "+-"))
    # 3-digit operands: 1.5M problems, sampled rather than enumerated; still distinct, disjoint and seeded.
    settings = {"digits": 3, "operand_digits": 3, "ops": "+-", "train_size": 3000, "test_size": 200}
    train, test = arithmetic.split_problems(settings, seed=5)
    assert len(train) == 3000 and len(test) == 200 and len(set(train + test)) == 3200
    assert arithmetic.split_problems(settings, seed=5) == (train, test)
    assert all(int(p.answer) == solve(p.question) >= 0 and p.b < 1000 for p in train)
    assert sum(p.b >= 100 for p in train) > 2000  # most second operands have 3 digits


def test_mistake_records_keep_only_the_models_wrong_answers():
    _, test = arithmetic.split_problems(SETTINGS, seed=0)
    own = [p.answer if i % 3 == 0 else "" if i % 3 == 1 else str(solve(p.question) + 7) for i, p in enumerate(test)]
    records = arithmetic.mistake_records(test, own, limit=100)
    wrong = [i for i in range(len(test)) if i % 3]  # an empty answer (the turn ended at once) is wrong too
    assert [r["rejected"][0]["content"] for r in records] == [own[i] for i in wrong]
    assert [r["chosen"][0]["content"] for r in records] == [test[i].answer for i in wrong]
    assert len(arithmetic.mistake_records(test, own, limit=3)) == 3
    with pytest.raises(ValueError, match="model_answers"):
        arithmetic.mistake_records(test, own[:-1], limit=3)


def test_grpo_rewards():
    completions = [[{"role": "assistant", "content": t}] for t in ("42", " 42", "41", "4 2", "42")]
    answers = ["42"] * 5
    assert arithmetic.exact_match_reward(completions, answers) == [1.0, 1.0, 0.0, 0.0, 1.0]
    fmt = arithmetic.FormatReward(end_id=7)
    ids = [[1, 7], [1, 7], [1, 7], [1, 7], [1, 2]]  # the last one never closed its turn
    assert fmt(completions, completion_ids=ids) == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert fmt.__name__ == "format"


def test_exact_match():
    _, test = arithmetic.split_problems(SETTINGS, seed=0)
    predictions = [f" {p.answer}\n" if i < 10 else "x" for i, p in enumerate(test)]
    assert arithmetic.exact_match(predictions, test) == pytest.approx(10 / 30)
    with pytest.raises(ValueError, match="predictions"):
        arithmetic.exact_match(predictions[:-1], test)
