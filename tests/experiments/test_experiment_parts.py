"""The experiments' pieces: reproducible data, the fits, bad arguments."""

import math

import numpy as np
import pytest
from shardkit.experiments import bios_data, fit, reversal, run_experiment


def test_data_is_a_function_of_the_seed():
    assert reversal.make_facts(5, 3) == reversal.make_facts(5, 3)
    assert reversal.make_facts(5, 3) != reversal.make_facts(5, 4)
    pools = {
        "first": 8,
        "last": 8,
        "cities": 5,
        "universities": 5,
        "companies": 5,
        "majors": 5,
        "years": 10,
    }
    a, b = bios_data.make_world(30, pools, 1), bios_data.make_world(30, pools, 1)
    assert a == b and bios_data.augmented_bios(a, 3, 1) == bios_data.augmented_bios(
        b, 3, 1
    )
    assert len({p["name"] for p in a}) == 30  # unique people


def test_reversal_facts_are_distinct_and_phrased_both_ways():
    facts = reversal.make_facts(10, 0)
    every = [f for g in reversal.GROUPS for f in facts[g]]
    assert (
        len({f["name"] for f in every}) == 30
        and len({f["description"] for f in every}) == 30
    )
    texts = reversal.training_texts(facts)
    assert len(texts) == 10 + 10 + 2 * 10
    one_way = facts["name_to_description"][0]
    assert one_way["forward"] in texts and one_way["backward"] not in texts


def test_bios_single_and_augmented_state_every_attribute():
    pools = {
        "first": 8,
        "last": 8,
        "cities": 5,
        "universities": 5,
        "companies": 5,
        "majors": 5,
        "years": 10,
    }
    people = bios_data.make_world(6, pools, 0)
    single, augmented = (
        bios_data.single_bios(people, 0),
        bios_data.augmented_bios(people, 4, 0),
    )
    assert len(single) == 6 and len(augmented) == 24
    for p, bio in zip(people, single):
        assert bio.count(p["name"]) == 1  # pronouns after the first sentence
        assert all(p[a] in bio for a in bios_data.ATTRIBUTES)
    for k, bio in enumerate(augmented):
        p = people[k // 4]
        assert bio.count(p["name"]) == 6  # the full name in every sentence
        assert all(p[a] in bio for a in bios_data.ATTRIBUTES)
    # The company fixes its city, as in bioS.
    by_company = {}
    for p in bios_data.make_world(60, pools, 2):
        assert (
            by_company.setdefault(p["company"], p["company_city"]) == p["company_city"]
        )


def test_power_law_fit_recovers_known_exponents():
    n = np.geomspace(1e3, 1e6, 6)
    exact = fit.power_law(n.tolist(), ((5e4 / n) ** 0.3).tolist())
    assert (
        exact["alpha_N"] == pytest.approx(0.3)
        and exact["N_c"] == pytest.approx(5e4)
        and exact["r2"] == pytest.approx(1)
    )
    with_floor = fit.power_law_with_constant(
        n.tolist(), (2.0 + (5e4 / n) ** 0.3).tolist(), steps=1000
    )
    assert with_floor["L_inf"] == pytest.approx(2.0, abs=0.01)
    assert with_floor["alpha_N"] == pytest.approx(0.3, rel=0.05)
    with pytest.raises(ValueError, match="at least 2"):
        fit.power_law([1.0], [1.0])
    with pytest.raises(ValueError, match="positive"):
        fit.power_law([1.0, 2.0], [1.0, -1.0])
    assert math.isfinite(fit.power_law([10, 100], [2.0, 1.0])["N_c"])


def test_bad_arguments_name_what_was_expected(tmp_path):
    with pytest.raises(ValueError, match="name: expected one of"):
        run_experiment("grokking", preset="micro", out=tmp_path)
    with pytest.raises(ValueError, match="preset: expected one of"):
        run_experiment("reversal", preset="huge", out=tmp_path)
    with pytest.raises(TypeError, match="seed: expected an int"):
        run_experiment("reversal", preset="micro", out=tmp_path, seed="1")
