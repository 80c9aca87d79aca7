"""``shardkit experiments NAME --preset micro``: each experiment runs end to end and shows its paper's direction.

Each micro run trains tiny shardkit GPTs for seconds on 1 thread. The
thresholds are the issue's (same direction >= 90%, reversed <= 5%;
augmented > sequential; loss falls with N), with margins checked by hand
over seeds 0, 1 and 2. Figures are checked against what the run directory
holds, and recomputed independently where they can be: greedy decoding with
``GPT.generate`` for the teacher-forced exact match, ``numpy.polyfit`` for the
power-law fit.
"""

import itertools
import json
import math

import numpy as np
import pytest
import torch
from shardkit.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def _run(name, out, *extra):
    assert (
        main(
            [
                "experiments",
                name,
                "--preset",
                "micro",
                "--out",
                str(out),
                "--device",
                "cpu",
                *extra,
            ]
        )
        == 0
    )
    return json.loads((out / "results.json").read_text())


def _check_outputs(out, results, arxiv):
    report = (out / "report.md").read_text()
    assert (
        f"arXiv:{arxiv}" in report and "## Where it agrees and why it differs" in report
    )
    assert len(results["figures"]) >= 2
    for name, meaning in results["figures"].items():
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 2000, name
        assert name in report and len(meaning) > 40


@pytest.fixture(scope="module")
def reversal(tmp_path_factory):
    out = tmp_path_factory.mktemp("reversal")
    return out, _run("reversal", out)


def test_reversal_curse_shows(reversal):
    out, r = reversal
    assert r["same_direction_accuracy"] >= 0.9
    assert r["reversed_accuracy"] <= 0.05
    # The control, trained in both orders, answers both: the reversed question is answerable once trained.
    assert r["control_both_directions"]["accuracy"] >= 0.9
    for group in r["per_group"].values():
        assert group["same_direction"] >= 0.85 and group["reversed"] <= 0.1
    _check_outputs(out, r, "2309.12288")


def test_reversal_exact_match_agrees_with_greedy_decoding(reversal):
    """The one-forward exact match equals what ``GPT.generate`` (temperature 0) produces, token by token."""
    from shardkit.experiments import common
    from shardkit.experiments import reversal as rev

    out, r = reversal
    config = r["config"]
    tokenizer = common.load_tokenizer(out / "train" / "tokenizer.json")
    model = common.build_model(config["model"], len(tokenizer), 0, "cpu")
    common.load_weights(model, out / "train" / "model.safetensors")
    facts = rev.make_facts(config["facts_per_group"], config["seed"])
    pairs = [
        rev.questions(f)[o]
        for g in rev.GROUPS
        for f in facts[g][:4]
        for o in ("n2d", "d2n")
    ]
    fast = common.exact_match(model, tokenizer, pairs)
    slow = []
    for prompt, answer in pairs:
        ids = torch.tensor([common.encode(tokenizer, prompt)])
        want = common.encode(tokenizer, answer)
        got = model.generate(ids, max_new_tokens=len(want), temperature=0.0)[
            0, ids.shape[1] :
        ].tolist()
        slow.append(got == want)
    assert fast == slow
    assert any(slow) and not all(
        slow
    )  # both outcomes occur, so the comparison means something


def test_rerun_skips_finished_parts_and_refuses_other_settings(reversal, capsys):
    out, r = reversal
    state_before = (out / "state.json").read_text()
    again = _run("reversal", out)
    assert "train: already done, skipped" in capsys.readouterr().out
    assert again["same_direction_accuracy"] == r["same_direction_accuracy"]
    assert (out / "state.json").read_text() == state_before
    with pytest.raises(ValueError, match="other settings"):
        _run("reversal", out, "--seed", "1")


def test_biographies_augmentation_makes_knowledge_extractable(tmp_path):
    r = _run("biographies", tmp_path)
    seq, aug = r["sequential_accuracy"], r["augmented_finetune_accuracy"]
    # Seeds 0-2 gave 0.49/0.29/0.44 against 0.16/0.07/0.12: a margin of 0.15 leaves room for other machines' numerics.
    assert aug > seq + 0.15
    assert (
        seq < r["majority_baseline"]["accuracy"] + 0.1
    )  # sequential stays near the baseline
    assert 0.0 <= r["mixed_accuracy"] <= 1.0
    # The fine-tuned half is memorised either way: the gap is extraction, not a failed fine-tuning.
    assert r["train_half_accuracy"]["sequential"] >= 0.6
    per = r["per_attribute_accuracy"]
    assert set(per) == {"sequential", "augmented_finetune", "mixed"}
    for condition, attrs in per.items():
        assert len(attrs) == 6
        mean = sum(attrs.values()) / 6  # every attribute has as many questions
        assert math.isclose(mean, r[f"{condition}_accuracy"], abs_tol=1e-9)
    _check_outputs(tmp_path, r, "2309.14316")


def test_scaling_loss_falls_with_model_size(tmp_path):
    r = _run("scaling", tmp_path)
    points = r["points"]
    assert len(points) >= 5
    params = [p["params"] for p in points]
    losses = [p["loss"] for p in points]
    assert params == sorted(params) and len(set(params)) == len(params)
    # Seeds 0-2 gave strictly falling losses, the closest neighbours 0.06 nats apart.
    assert all(b < a for a, b in itertools.pairwise(losses)), losses
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.2
    assert r["alpha_N"] > 0
    slope, intercept = np.polyfit(np.log(params), np.log(losses), 1)
    assert r["alpha_N"] == pytest.approx(-slope, rel=1e-9)
    predicted = slope * np.log(params) + intercept
    residual = np.sum((np.log(losses) - predicted) ** 2)
    total = np.sum((np.log(losses) - np.mean(np.log(losses))) ** 2)
    assert r["r2"] == pytest.approx(1 - residual / total, rel=1e-9)
    assert (
        r["with_constant"]["r2"] >= r["r2"] - 1e-12
    )  # L_inf = 0 is among its candidates
    _check_outputs(tmp_path, r, "2001.08361")
