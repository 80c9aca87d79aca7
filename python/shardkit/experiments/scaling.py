"""A scaling-law sweep: held-out loss against model size, L(N) (Kaplan et al. 2020, arXiv:2001.08361).

Models of at least five sizes (non-embedding parameters N, as Kaplan counts
them) are trained with the same data budget, steps, batch and schedule on
the bundled English text (Moby-Dick: the seed picks the data order and the
initial weights; the text itself is fixed and real, since a power law in N
is a statement about natural language). Each model's loss on the held-out
end of the text is fitted by L(N) = (N_c / N)^alpha_N on log-log axes, and
also with a constant, L_inf + (N_c / N)^alpha_N: at a fixed data budget the
loss cannot fall below what the data allow, and the constant absorbs that
floor (Kaplan's L(N) is for models trained to convergence on ample data).
"""

from __future__ import annotations

from shardkit import corpus
from shardkit.experiments import common, fit, plots
from shardkit.experiments.runner import RunDir

PAPER = {
    "arxiv": "2001.08361",
    "title": "Scaling Laws for Neural Language Models (Kaplan et al., 2020)",
    "setting": (
        "decoder-only Transformers from 768 to 1.5B non-embedding parameters on WebText2, trained to "
        "convergence (early stopped) on 22B tokens; L(N) = (N_c/N)^alpha_N with alpha_N ≈ 0.076, "
        "N_c ≈ 8.8e13"
    ),
    "alpha_N": 0.076,
    "N_c": 8.8e13,
}


def _shape(width: int, layers: int, heads: int) -> dict:
    return {
        "hidden_size": width,
        "intermediate_size": 8 * width // 3 // 8 * 8 or 8,
        "num_layers": layers,
        "num_heads": heads,
        "num_kv_heads": heads,
    }


PRESETS = {
    "micro": {
        "seed": 0,
        "text": "moby_dick",
        "chars": 300_000,
        "held_out": 0.1,
        "vocab_size": 300,
        "seq_len": 64,
        "eval_windows": 200,
        "sizes": [
            _shape(8, 1, 2),
            _shape(16, 1, 2),
            _shape(24, 2, 2),
            _shape(32, 2, 4),
            _shape(48, 2, 4),
        ],
        "train": {
            "steps": 120,
            "batch_size": 16,
            "learning_rate": 3e-3,
            "warmup_steps": 12,
        },
    },
    "default": {
        "seed": 0,
        "text": "moby_dick",
        "chars": 1_300_000,
        "held_out": 0.05,
        "vocab_size": 1024,
        "seq_len": 128,
        "eval_windows": 200,
        "sizes": [
            _shape(16, 2, 2),
            _shape(32, 2, 4),
            _shape(48, 3, 4),
            _shape(64, 4, 4),
            _shape(96, 4, 4),
            _shape(128, 4, 4),
        ],
        "train": {
            "steps": 600,
            "batch_size": 16,
            "learning_rate": 3e-3,
            "warmup_steps": 40,
        },
    },
    "gpu": {
        "seed": 0,
        "text": "sotu_1990_2021",
        "chars": None,
        "held_out": 0.05,
        "vocab_size": 4096,
        "seq_len": 256,
        "eval_windows": 400,
        "sizes": [
            _shape(64, 2, 4),
            _shape(128, 4, 4),
            _shape(256, 4, 4),
            _shape(384, 6, 6),
            _shape(512, 8, 8),
            _shape(768, 12, 12),
        ],
        "train": {
            "steps": 5000,
            "batch_size": 64,
            "learning_rate": 1e-3,
            "warmup_steps": 200,
        },
    },
}


def _texts(config: dict) -> tuple[str, str]:
    with corpus.open_text(config["text"]) as f:
        text = f.read()
    if config["chars"]:
        text = text[: config["chars"]]
    cut = int(len(text) * (1.0 - config["held_out"]))
    return text[:cut], text[cut:]


def run(run_dir: RunDir, config: dict) -> dict:
    seed = config["seed"]
    train_text, held_text = _texts(config)
    if len(config["sizes"]) < 2:
        raise ValueError(
            "sizes: a scaling fit needs at least 2 model sizes (the experiment uses 5 or more)"
        )

    def tokenizer_part(directory):
        tok = common.train_tokenizer([train_text], config["vocab_size"])
        common.save_tokenizer(tok, directory / "tokenizer.json")
        return {"vocab_size": len(tok)}

    run_dir.part("tokenizer", tokenizer_part)
    tokenizer = common.load_tokenizer(run_dir.path / "tokenizer" / "tokenizer.json")
    ids = common.encode(tokenizer, train_text)
    held = common.encode(tokenizer, held_text)
    t = config["seq_len"]
    records = [
        {"input_ids": ids[i : i + t], "labels": ids[i : i + t]}
        for i in range(0, len(ids) - t + 1, t)
    ]
    train_settings = config["train"]
    tokens_seen = train_settings["steps"] * train_settings["batch_size"] * t

    def size_part(shape):
        def fn(directory):
            model = common.build_model(
                {**shape, "max_position_embeddings": t},
                len(tokenizer),
                seed,
                config["device"],
            )
            history = common.train(
                model, tokenizer, records, train_settings, directory / "trainer", seed
            )
            loss = common.mean_loss(model, held, t, config["eval_windows"])
            return {
                "params": common.non_embedding_params(model),
                "total_params": sum(p.numel() for p in model.parameters()),
                "loss": loss,
                "shape": shape,
                "log_history": history,
            }

        return fn

    done = [
        run_dir.part(f"size_{k}_w{s['hidden_size']}_l{s['num_layers']}", size_part(s))
        for k, s in enumerate(config["sizes"])
    ]
    points = [{"params": d["params"], "loss": d["loss"]} for d in done]
    params, losses = [p["params"] for p in points], [p["loss"] for p in points]
    plain = fit.power_law(params, losses)
    constant = fit.power_law_with_constant(params, losses)
    results = {
        "experiment": "scaling",
        "paper": PAPER,
        "config": config,
        "points": points,
        "alpha_N": plain["alpha_N"],
        "N_c": plain["N_c"],
        "r2": plain["r2"],
        "with_constant": constant,
        "train_tokens_per_model": tokens_seen,
        "train_text_tokens": len(ids),
        "held_out_tokens": len(held),
        "models": [
            {k: d[k] for k in ("params", "total_params", "loss", "shape", "seconds")}
            for d in done
        ],
    }
    results["figures"] = {
        plots.power_law(
            run_dir.path / "scaling_law.png",
            params,
            losses,
            {**plain, "with_constant": constant},
            "held-out loss against model size",
        ): "Held-out loss of each model against its non-embedding parameters, on log-log axes. A straight "
        "line is a power law; its slope is -alpha_N. The dashed curve adds a constant floor (the loss the "
        "fixed data budget allows).",
        plots.learning_curves(
            run_dir.path / "learning_curves.png",
            {f"N={d['params']:,}": d["log_history"] for d in done},
            "scaling: training loss per model size",
        ): "Training loss of each model size over the same steps and data: larger models fall faster and "
        "lower.",
    }
    run_dir.write_results(results)
    run_dir.write_report(report(results, config))
    return results


def report(r: dict, config: dict) -> str:
    c = r["with_constant"]
    lines = [
        "# A scaling law L(N), measured with shardkit",
        "",
        f"Paper: {PAPER['title']}, arXiv:{PAPER['arxiv']}.",
        f"Paper's setting: {PAPER['setting']}.",
        "",
        (
            f"This run: preset `{config['preset']}`, seed {config['seed']}, {len(r['points'])} shardkit GPTs trained "
            f"on {r['train_tokens_per_model']:,} tokens each ({config['train']['steps']} steps of "
            f"{config['train']['batch_size']} x {config['seq_len']} tokens; the text has {r['train_text_tokens']:,}) "
            f"of `{config['text']}` with a byte-level BPE of {config['vocab_size']} tokens, same learning rate "
            f"{config['train']['learning_rate']} and cosine schedule for all; held-out loss over "
            f"{r['held_out_tokens']:,} tokens at most {config['eval_windows']} windows; device `{config['device']}`."
        ),
        "",
        "| non-embedding params N | total params | held-out loss (nats/token) | train time (s) |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {m['params']:,} | {m['total_params']:,} | {m['loss']:.4f} | {m['seconds']:.0f} |"
        for m in r["models"]
    ]
    lines += [
        "",
        "| fit | alpha_N | N_c | L_inf | R² (log L) |",
        "|---|---|---|---|---|",
        f"| (N_c/N)^α (this run) | {r['alpha_N']:.4f} | {r['N_c']:.3g} | | {r['r2']:.4f} |",
        f"| L_inf + (N_c/N)^α (this run) | {c['alpha_N']:.4f} | {c['N_c']:.3g} | {c['L_inf']:.3f} | {c['r2']:.4f} |",
        f"| Kaplan et al. | {PAPER['alpha_N']} | {PAPER['N_c']:.2g} | | |",
        "",
        "## Where it agrees and why it differs",
        "",
        "- Agrees: the loss falls with N as a straight line on log-log axes over this range (see R²).",
        (
            "- Differs: Kaplan's alpha_N ≈ 0.076 holds for models trained to convergence on 22B tokens of WebText2, "
            "from 768 parameters up to 1.5B. Here every model sees the same small budget of one novel's tokens, so "
            "the exponent mixes how fast each size learns within the budget with how well it could do at "
            "convergence, and the vocabulary (bytes plus a few merges), text and tokenizer differ, which moves the "
            "constants N_c and the exponent. "
            + (
                f"Here alpha_N = {r['alpha_N']:.3f} is {'shallower' if r['alpha_N'] < PAPER['alpha_N'] else 'steeper'} "
                f"than Kaplan's {PAPER['alpha_N']}: the larger models are limited by the fixed data budget (several "
                "epochs of a small text), which flattens the plain power law; the fit with a constant separates "
                f"that floor (L_inf = {c['L_inf']:.2f}) and gives alpha_N = {c['alpha_N']:.3f} for the part above it."
            )
        ),
        (
            "- N counts the non-embedding parameters, as Kaplan does; embeddings are excluded because they change "
            "the picture for small models."
        ),
        "",
        "## Figures",
        "",
    ]
    lines += [f"- `{name}`: {meaning}" for name, meaning in r["figures"].items()]
    return "\n".join(lines) + "\n"
