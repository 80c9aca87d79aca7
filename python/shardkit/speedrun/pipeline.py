"""The speedrun's stages in order, each recorded in ``state.json`` once finished.

Rerunning with the same settings skips the finished stages (and a training
stage interrupted after a checkpoint resumes from it); other settings in the
same directory are refused rather than mixed.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from shardkit.speedrun import arithmetic, corpus_data, files
from shardkit.speedrun.launch import launch

STAGES = ("tokenizer", "pretrain", "sft", "dpo", "grpo")


class Speedrun:
    """One run directory: its settings, its finished stages and how to run the rest.

    Args:
        run_dir: where everything goes (created).
        config: resolved settings (``shardkit.speedrun.config.resolve``).
        preset: the preset's name, for the report.
        nproc: ranks of the training stages.
        restart: delete what ``run_dir`` holds first.
    """

    def __init__(self, run_dir: str | Path, config: dict, *, preset: str, nproc: int, restart: bool = False,
                 device: str = "cpu") -> None:
        if not isinstance(nproc, int) or nproc < 1:
            raise ValueError(f"nproc: expected a positive int, got {nproc!r}")
        self.run_dir = Path(run_dir).resolve()
        self.config, self.preset, self.nproc, self.device = config, preset, nproc, device
        state_path = self.run_dir / "state.json"
        if restart and self.run_dir.exists():
            shutil.rmtree(self.run_dir)
        if state_path.exists():
            self.state = files.read_json(state_path)
            if self.state.get("config") != config:
                raise ValueError(f"{self.run_dir} holds a speedrun with other settings ({self.state.get('preset')!r} "
                                 f"preset); pass --restart to start it over, or --out to use another directory")
        else:
            self.state = {"preset": preset, "config": config, "stages": {}}
        self.state["nproc"] = nproc
        self.state["device"] = device
        self._save()
        self.train_problems, self.test_problems = arithmetic.split_problems(config["arithmetic"],
                                                                           config["run"]["seed"])
        self._tokenizer = None

    # ---- bookkeeping -------------------------------------------------------

    def _save(self) -> None:
        files.write_json(self.run_dir / "state.json", self.state)

    def done(self, stage: str) -> bool:
        return stage in self.state["stages"]

    def result(self, stage: str) -> dict:
        return self.state["stages"][stage]

    def _finish(self, stage: str, result: dict, started: float) -> None:
        result["wall_seconds"] = time.perf_counter() - started
        self.state["stages"][stage] = result
        self._save()

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from shardkit.speedrun.worker import load_tokenizer

            self._tokenizer = load_tokenizer(self.run_dir)
        return self._tokenizer

    def _texts(self):
        return corpus_data.split_texts(self.config["tokenizer"]["texts"], self.config["data"]["held_out"])

    # ---- stages ------------------------------------------------------------

    def run(self) -> Path:
        """Run every unfinished stage, then write the report; returns its path."""
        from shardkit.speedrun.report import write_report

        for stage in STAGES:
            if self.done(stage):
                print(f"speedrun: {stage} already done, skipped")
                continue
            print(f"speedrun: {stage}")
            getattr(self, f"_run_{stage}")()
        return write_report(self.run_dir, self.state)

    def _run_tokenizer(self) -> None:
        from shardkit.tokenizer import CHAT_SPECIAL_TOKENS, BPETokenizer

        started = time.perf_counter()
        settings = self.config["tokenizer"]
        train_texts, _ = self._texts()
        bpe = BPETokenizer.train_from_iterator(train_texts, settings["vocab_size"], pattern=settings["pattern"],
                                               special_tokens=CHAT_SPECIAL_TOKENS, progress=True)
        seconds = time.perf_counter() - started
        bpe.save(files.tokenizer_path(self.run_dir))
        nbytes = sum(len(t.encode("utf-8")) for t in train_texts)
        self._finish("tokenizer", {"vocab_size": bpe.vocab_size, "train_bytes": nbytes, "seconds": seconds}, started)

    def _train_and_evaluate(self, stage: str, started: float) -> None:
        from shardkit.speedrun.evaluate import evaluate_stage, load_model

        launch(stage, self.run_dir, self.nproc, self.device)
        directory = files.stage_dir(self.run_dir, stage)
        training = files.read_json(directory / "result.json")
        model = load_model(directory / "model.safetensors", self.config, len(self.tokenizer))
        _, held_texts = self._texts()
        held_ids = corpus_data.token_stream(self.tokenizer, held_texts)
        evaluation = evaluate_stage(model, self.tokenizer, held_ids, self.test_problems, self.config, stage)
        self._finish(stage, {"training": training, "eval": evaluation}, started)

    def _run_pretrain(self) -> None:
        started = time.perf_counter()
        train_texts, _ = self._texts()
        records = corpus_data.pretrain_records(self.tokenizer, train_texts, self.config["data"]["seq_len"])
        files.write_jsonl(files.stage_dir(self.run_dir, "pretrain") / "train.jsonl", records)
        self._train_and_evaluate("pretrain", started)

    def _run_sft(self) -> None:
        started = time.perf_counter()
        settings, seed = self.config["data"], self.config["run"]["seed"]
        train_texts, _ = self._texts()
        text_ids = corpus_data.token_stream(self.tokenizer, train_texts)
        records = corpus_data.mixed_sft_records(self.tokenizer, arithmetic.sft_records(self.train_problems), text_ids,
                                                settings["sft_text_fraction"], settings["sft_text_len"], seed)
        files.write_jsonl(files.stage_dir(self.run_dir, "sft") / "train.jsonl", records)
        self._train_and_evaluate("sft", started)
        self.state["stages"]["sft"]["text_rows"] = sum(r["kind"] == "text" for r in records)
        self.state["stages"]["sft"]["arithmetic_rows"] = sum(r["kind"] == "arithmetic" for r in records)
        self._save()

    def _run_dpo(self) -> None:
        from shardkit.speedrun.evaluate import answer, load_model

        started = time.perf_counter()
        settings, seed = self.config["arithmetic"], self.config["run"]["seed"]
        # The SFT model's greedy answers to training problems; the pairs reject its wrong ones (and only those).
        candidates = self.train_problems[: settings["dpo_candidates"]]
        sft_model = load_model(files.stage_dir(self.run_dir, "sft") / "model.safetensors", self.config,
                               len(self.tokenizer))
        own = answer(sft_model, self.tokenizer, candidates, self.config["eval"]["max_new_tokens"], desc="dpo pairs")
        pairs = arithmetic.mistake_records(candidates, own, settings["dpo_pairs"])
        global_batch = self.config["dpo"]["per_device_train_batch_size"] * self.nproc
        if len(pairs) < global_batch:
            raise RuntimeError(f"DPO: the SFT model got only {len(pairs)} of {len(candidates)} training problems "
                               f"wrong, fewer than one global batch ({global_batch}); raise [arithmetic] "
                               "dpo_candidates or lower [dpo] per_device_train_batch_size")
        directory = files.stage_dir(self.run_dir, "dpo")
        files.write_jsonl(directory / "train.jsonl", pairs)
        test_own = self.result("sft")["eval"]["test_answers"]
        files.write_jsonl(directory / "eval.jsonl",
                          arithmetic.preference_records(self.test_problems, test_own, seed + 1))
        self._train_and_evaluate("dpo", started)
        self.state["stages"]["dpo"].update(
            pairs=len(pairs), candidates=len(candidates),
            sft_train_exact_match=arithmetic.exact_match(own, candidates),
            pairs_from_model=1.0)  # every training pair rejects the SFT model's own answer
        self._save()

    def _run_grpo(self) -> None:
        started = time.perf_counter()
        settings = self.config["arithmetic"]
        # Training problems after DPO's candidates where there are enough (GRPO then sees problems DPO did not).
        start = settings["dpo_candidates"]
        if start + settings["grpo_prompts"] > len(self.train_problems):
            start = 0
        problems = self.train_problems[start : start + settings["grpo_prompts"]]
        files.write_jsonl(files.stage_dir(self.run_dir, "grpo") / "train.jsonl", arithmetic.grpo_records(problems))
        self._train_and_evaluate("grpo", started)
