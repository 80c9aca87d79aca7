"""bioS-style synthetic biographies (Allen-Zhu & Li, Physics of Language Models 3.1, arXiv:2309.14316).

Each person has a unique full name and six attributes: birth date, birth
city, university, major, employer and the employer's city (fixed by the
employer, as in bioS). A biography states the six attributes, one sentence
each, with a template drawn per sentence from a small pool.

- ``single``: one biography per person, sentences in the fixed order, the
  full name only in the first sentence and a pronoun after it (bioS single).
- ``augmented``: ``rewrites`` biographies per person, each with fresh
  templates, shuffled sentences and the full name in every sentence
  (bioS multi5 + permute + fullname).
- QA: "What is the birth city of Anya Forger? Answer: Princeton."
"""

from __future__ import annotations

import random

from shardkit.experiments import names

ATTRIBUTES = (
    "birth_date",
    "birth_city",
    "university",
    "major",
    "company",
    "company_city",
)

QUESTIONS = {
    "birth_date": "What is the birth date of {name}?",
    "birth_city": "What is the birth city of {name}?",
    "university": "Which university did {name} study at?",
    "major": "What major did {name} study?",
    "company": "Which company did {name} work for?",
    "company_city": "Where did {name} work?",
}

# {who}: the full name or the pronoun; {v}: the value.
TEMPLATES = {
    "birth_date": [
        "{who} was born on {v}.",
        "{who} came into this world on {v}.",
        "{who} celebrates a birthday on {v}.",
        "{who} arrived on {v}.",
    ],
    "birth_city": [
        "{who} was born in {v}.",
        "{who} spent the early years in {v}.",
        "{who} grew up in {v}.",
        "{who} is a native of {v}.",
    ],
    "university": [
        "{who} studied at {v}.",
        "{who} graduated from {v}.",
        "{who} received an education at {v}.",
        "{who} attended {v}.",
    ],
    "major": [
        "{who} majored in {v}.",
        "{who} focused on {v}.",
        "{who} completed a degree in {v}.",
        "{who} specialized in {v}.",
    ],
    "company": [
        "{who} worked for {v}.",
        "{who} was employed by {v}.",
        "{who} held a job at {v}.",
        "{who} had a career at {v}.",
    ],
    "company_city": [
        "{who} worked in {v}.",
        "{who} was based in {v}.",
        "{who} had an office in {v}.",
        "{who} commuted to work in {v}.",
    ],
}

MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
MAJORS = [
    "Physics",
    "Chemistry",
    "Biology",
    "History",
    "Economics",
    "Music",
    "Law",
    "Medicine",
    "Philosophy",
    "Geology",
    "Linguistics",
    "Nursing",
    "Architecture",
    "Statistics",
    "Sociology",
    "Astronomy",
]


def make_world(n_people: int, pools: dict, seed: int) -> list[dict]:
    """``n_people`` people with their attributes; ``pools``: sizes of the name and value pools."""
    rng = random.Random(seed)
    words = names.unique_words(
        rng,
        pools["first"]
        + pools["last"]
        + 2 * pools["cities"]
        + pools["universities"]
        + pools["companies"],
        syllables=(2, 3),
    )
    take = iter(words)
    first = [next(take) for _ in range(pools["first"])]
    last = [next(take) for _ in range(pools["last"])]
    cities = [next(take) for _ in range(pools["cities"])]
    universities = [f"{next(take)} University" for _ in range(pools["universities"])]
    companies = [f"{next(take)} Corp" for _ in range(pools["companies"])]
    company_city = {c: rng.choice(cities) for c in companies}
    majors = MAJORS[: pools["majors"]]
    people = []
    for f, la in names.unique_pairs(rng, n_people, first, last):
        company = rng.choice(companies)
        people.append(
            {
                "name": f"{f} {la}",
                "pronoun": rng.choice(["He", "She"]),
                "birth_date": f"{rng.choice(MONTHS)} {rng.randint(1, 28)}, {rng.randint(1900, 1900 + pools['years'] - 1)}",
                "birth_city": rng.choice(cities),
                "university": rng.choice(universities),
                "major": rng.choice(majors),
                "company": company,
                "company_city": company_city[company],
            }
        )
    return people


def biography(
    person: dict, rng: random.Random, *, shuffle: bool, fullname: bool
) -> str:
    order = list(ATTRIBUTES)
    if shuffle:
        rng.shuffle(order)
    sentences = []
    for i, attribute in enumerate(order):
        who = person["name"] if (fullname or i == 0) else person["pronoun"]
        sentences.append(
            rng.choice(TEMPLATES[attribute]).format(who=who, v=person[attribute])
        )
    # The leading space makes the name at the start the same tokens as the name inside a question.
    return " " + " ".join(sentences)


def single_bios(people: list[dict], seed: int) -> list[str]:
    """bioS single: one biography per person, fixed order, pronouns after the first sentence."""
    rng = random.Random(seed + 1)
    return [biography(p, rng, shuffle=False, fullname=False) for p in people]


def augmented_bios(people: list[dict], rewrites: int, seed: int) -> list[str]:
    """bioS multi + permute + fullname: ``rewrites`` shuffled biographies per person, full name everywhere."""
    rng = random.Random(seed + 2)
    return [
        biography(p, rng, shuffle=True, fullname=True)
        for p in people
        for _ in range(rewrites)
    ]


def qa_pairs(people: list[dict]) -> list[tuple[str, str, str]]:
    """(attribute, prompt, answer) of every attribute of every person."""
    return [
        (a, QUESTIONS[a].format(name=p["name"]) + " Answer:", f" {p[a]}")
        for p in people
        for a in ATTRIBUTES
    ]


def chance_accuracy(people: list[dict], attribute: str) -> float:
    """Accuracy of always answering the most common value of ``attribute`` (a baseline)."""
    counts: dict[str, int] = {}
    for p in people:
        counts[p[attribute]] = counts.get(p[attribute], 0) + 1
    return max(counts.values()) / len(people)
