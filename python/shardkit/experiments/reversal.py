"""The reversal curse (Berglund et al. 2023, arXiv:2309.12288), on fictitious facts.

Three groups of made-up facts, each "<name> is <description>":

- ``name_to_description``: trained only as "Zorvak Telmin is the composer of Silver Harbor.";
- ``description_to_name``: trained only as "The composer of Silver Harbor is Zorvak Telmin.";
- ``both`` (the control): trained in both orders.

One model learns all of them from scratch (language modelling on every token,
as the paper fine-tunes on documents). Then, for every fact, the prompt of
each order is completed greedily: "Zorvak Telmin is" -> " the composer of
Silver Harbor" and "The composer of Silver Harbor is" -> " Zorvak Telmin".
The same direction is learnt; the reversed one stays at 0, while the control
shows that the reversed question is answerable once its order is trained.
"""

from __future__ import annotations

import random

from shardkit.experiments import common, names, plots
from shardkit.experiments.runner import RunDir

PAPER = {
    "arxiv": "2309.12288",
    "title": 'The Reversal Curse: LLMs trained on "A is B" fail to learn "B is A" (Berglund et al., 2023)',
    "setting": (
        "Experiment 1: GPT-3 175B (davinci) fine-tuned on 30 fictitious celebrities per subset "
        "(NameToDescription, DescriptionToName, Both), each fact paraphrased 30 times; exact match "
        "of the completion at temperature 0"
    ),
    "name_to_description": {"same": 50.0, "reversed": 0.0},
    "description_to_name": {"same": 96.7, "reversed": 0.1},
}

ROLES = [
    "composer",
    "director",
    "founder",
    "inventor",
    "author",
    "architect",
    "discoverer",
    "painter",
    "captain",
    "keeper",
]
GROUPS = ("name_to_description", "description_to_name", "both")

PRESETS = {
    "micro": {
        "seed": 0,
        "facts_per_group": 16,
        "vocab_size": 500,
        "model": {
            "hidden_size": 64,
            "intermediate_size": 176,
            "num_layers": 2,
            "num_heads": 4,
            "num_kv_heads": 4,
            "max_position_embeddings": 64,
        },
        "train": {
            "steps": 200,
            "batch_size": 32,
            "learning_rate": 5e-3,
            "warmup_steps": 20,
        },
    },
    "default": {
        "seed": 0,
        "facts_per_group": 100,
        "vocab_size": 600,
        "model": {
            "hidden_size": 128,
            "intermediate_size": 344,
            "num_layers": 4,
            "num_heads": 4,
            "num_kv_heads": 4,
            "max_position_embeddings": 64,
        },
        "train": {
            "steps": 2000,
            "batch_size": 32,
            "learning_rate": 2e-3,
            "warmup_steps": 100,
        },
    },
    "gpu": {
        "seed": 0,
        "facts_per_group": 1000,
        "vocab_size": 2048,
        "model": {
            "hidden_size": 512,
            "intermediate_size": 1376,
            "num_layers": 8,
            "num_heads": 8,
            "num_kv_heads": 8,
            "max_position_embeddings": 64,
        },
        "train": {
            "steps": 8000,
            "batch_size": 128,
            "learning_rate": 1e-3,
            "warmup_steps": 400,
        },
    },
}


def make_facts(n_per_group: int, seed: int) -> dict[str, list[dict]]:
    """``n_per_group`` facts per group: name, description, and the two sentences."""
    rng = random.Random(seed)
    total = n_per_group * len(GROUPS)
    words = names.unique_words(rng, 2 * total + 2 * total, syllables=(2, 3))
    first, last, title_a, title_b = (
        words[i * total : (i + 1) * total] for i in range(4)
    )
    facts = []
    for i in range(total):
        name = f"{first[i]} {last[i]}"
        description = f"the {rng.choice(ROLES)} of {title_a[i]} {title_b[i]}"
        facts.append(
            {
                "name": name,
                "description": description,
                # A leading space everywhere: a name (or description) is then the same tokens at the start
                # of a sentence as after "is", so the reversed question asks for tokens that were trained.
                "forward": f" {name} is {description}.",
                "backward": f" {description[0].upper()}{description[1:]} is {name}.",
            }
        )
    return {
        g: facts[k * n_per_group : (k + 1) * n_per_group] for k, g in enumerate(GROUPS)
    }


def training_texts(facts: dict[str, list[dict]]) -> list[str]:
    texts = [f["forward"] for f in facts["name_to_description"]]
    texts += [f["backward"] for f in facts["description_to_name"]]
    texts += [f[k] for f in facts["both"] for k in ("forward", "backward")]
    return texts


def questions(fact: dict) -> dict[str, tuple[str, str]]:
    """(prompt, answer) of each order: ``n2d`` asks for the description, ``d2n`` for the name."""
    d = fact["description"]
    return {
        "n2d": (f" {fact['name']} is", f" {d}"),
        "d2n": (f" {d[0].upper()}{d[1:]} is", f" {fact['name']}"),
    }


def run(run_dir: RunDir, config: dict) -> dict:
    seed = config["seed"]
    facts = make_facts(config["facts_per_group"], seed)
    texts = training_texts(facts)

    def train_part(directory):
        tokenizer = common.train_tokenizer(texts, config["vocab_size"])
        common.save_tokenizer(tokenizer, directory / "tokenizer.json")
        model = common.build_model(
            config["model"], len(tokenizer), seed, config["device"]
        )
        records = [common.lm_record(tokenizer, t) for t in texts]
        history = common.train(
            model, tokenizer, records, config["train"], directory / "trainer", seed
        )
        common.save_model(model, directory / "model.safetensors")
        return {
            "log_history": history,
            "non_embedding_params": common.non_embedding_params(model),
            "tokens_per_fact": sum(len(r["input_ids"]) for r in records) / len(records),
        }

    trained = run_dir.part("train", train_part)

    def eval_part(directory):
        path = run_dir.path / "train"
        tokenizer = common.load_tokenizer(path / "tokenizer.json")
        model = common.build_model(
            config["model"], len(tokenizer), seed, config["device"]
        )
        common.load_weights(model, path / "model.safetensors")
        out = {}
        for group in GROUPS:
            for order in ("n2d", "d2n"):
                pairs = [questions(f)[order] for f in facts[group]]
                out[f"{group}/{order}"] = common.rate(
                    common.exact_match(model, tokenizer, pairs, desc=group)
                )
        examples = [
            {"prompt": questions(f)[o][0], "answer": questions(f)[o][1]}
            for f, o in (
                (facts["name_to_description"][0], "n2d"),
                (facts["name_to_description"][0], "d2n"),
            )
        ]
        return {"accuracy": out, "examples": examples}

    evaluated = run_dir.part("eval", eval_part)
    acc = evaluated["accuracy"]
    same = {
        "name_to_description": acc["name_to_description/n2d"],
        "description_to_name": acc["description_to_name/d2n"],
    }
    reverse = {
        "name_to_description": acc["name_to_description/d2n"],
        "description_to_name": acc["description_to_name/n2d"],
    }
    results = {
        "experiment": "reversal",
        "paper": PAPER,
        "config": config,
        "same_direction_accuracy": sum(same.values()) / 2,
        "reversed_accuracy": sum(reverse.values()) / 2,
        "control_both_directions": {
            "forward_accuracy": acc["both/n2d"],
            "backward_accuracy": acc["both/d2n"],
            "accuracy": (acc["both/n2d"] + acc["both/d2n"]) / 2,
        },
        "per_group": {
            g: {"same_direction": same[g], "reversed": reverse[g]} for g in same
        },
        "non_embedding_params": trained["non_embedding_params"],
        "train_seconds": trained["seconds"],
        "final_train_loss": trained["log_history"][-1]["loss"],
    }
    figures = {
        plots.learning_curves(
            run_dir.path / "learning_curve.png",
            {"all facts": trained["log_history"]},
            "reversal: training loss",
        ): "Training loss of the one model on all facts; it falls towards 0 as the facts are memorised "
        "(the made-up names cannot be predicted before they start, so it keeps a floor).",
        plots.grouped_bars(
            run_dir.path / "accuracy.png",
            [
                "name→description\n(trained n→d)",
                "description→name\n(trained d→n)",
                "control\n(trained both)",
            ],
            {
                "same direction as trained": [
                    100 * same["name_to_description"],
                    100 * same["description_to_name"],
                    100 * acc["both/n2d"],
                ],
                "reversed": [
                    100 * reverse["name_to_description"],
                    100 * reverse["description_to_name"],
                    100 * acc["both/d2n"],
                ],
            },
            "reversal curse: exact match per direction",
        ): "Exact-match accuracy per group and question order. The left bars of the first two groups ask in the "
        "trained order, the right bars in the reversed order; the control group was trained in both orders, "
        "so both its bars are 'trained' questions.",
    }
    results["figures"] = figures
    run_dir.write_results(results)
    run_dir.write_report(report(results, config, evaluated["examples"]))
    return results


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def report(r: dict, config: dict, examples: list[dict]) -> str:
    g = r["per_group"]
    lines = [
        "# The reversal curse, reproduced with shardkit",
        "",
        f"Paper: {PAPER['title']}, arXiv:{PAPER['arxiv']}.",
        f"Paper's setting: {PAPER['setting']}.",
        "",
        (
            f"This run: preset `{r['config']['preset']}`, seed {config['seed']}, {config['facts_per_group']} facts per group, "
            f"a shardkit GPT with {r['non_embedding_params']:,} non-embedding parameters trained from scratch for "
            f"{config['train']['steps']} steps (batch {config['train']['batch_size']}) on the facts alone, byte-level BPE "
            f"of {config['vocab_size']} tokens trained on them ({r['train_seconds']:.0f} s of training, device "
            f"`{config['device']}`)."
        ),
        "",
        "| group (trained order) | question | this run | paper |",
        "|---|---|---|---|",
        (
            f"| name→description | same (name → description) | {_pct(g['name_to_description']['same_direction'])} | "
            f"{PAPER['name_to_description']['same']}% |"
        ),
        (
            f"| name→description | reversed (description → name) | {_pct(g['name_to_description']['reversed'])} | "
            f"{PAPER['name_to_description']['reversed']}% |"
        ),
        (
            f"| description→name | same (description → name) | {_pct(g['description_to_name']['same_direction'])} | "
            f"{PAPER['description_to_name']['same']}% |"
        ),
        (
            f"| description→name | reversed (name → description) | {_pct(g['description_to_name']['reversed'])} | "
            f"{PAPER['description_to_name']['reversed']}% |"
        ),
        f"| control (both orders) | name → description | {_pct(r['control_both_directions']['forward_accuracy'])} | |",
        f"| control (both orders) | description → name | {_pct(r['control_both_directions']['backward_accuracy'])} | |",
        "",
        (
            f"`same_direction_accuracy` = {_pct(r['same_direction_accuracy'])}, "
            f"`reversed_accuracy` = {_pct(r['reversed_accuracy'])}, control = "
            f"{_pct(r['control_both_directions']['accuracy'])}."
        ),
        "",
        "Example questions: "
        + "; ".join(f"`{e['prompt']}` → `{e['answer'].strip()}`" for e in examples)
        + ".",
        "",
        "## Where it agrees and why it differs",
        "",
        (
            "- Agrees: a fact learnt in one order is answered in that order and not at all in the other (the paper's "
            "0.0% / 0.1%), while the control, trained in both orders, answers both. The curse is about the training "
            "order, not about the question being harder."
        ),
        (
            "- Differs: the paper fine-tunes a 175B model pretrained on the web, with 30 paraphrases per fact, and its "
            "name→description exact match is only 50% because a description can be phrased many ways. Here a tiny model "
            "learns from scratch with one phrasing, so the trained direction is memorised almost perfectly. A model "
            'trained from scratch has also never seen any name as a *predicted* continuation after "... is" except '
            "the trained ones, so the reversed exact match is 0 for the same reason as in the paper: the gradient of "
            '"A is B" only raises p(B | A).'
        ),
        (
            "- Scoring: greedy exact match of the whole answer, as one teacher-forced forward pass (identical to "
            "greedy decoding of the answer's length)."
        ),
        "",
        "## Figures",
        "",
    ]
    lines += [f"- `{name}`: {meaning}" for name, meaning in r["figures"].items()]
    return "\n".join(lines) + "\n"
