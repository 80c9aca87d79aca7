"""``shardkit memory`` end to end through the CLI entry point."""

import json

import pytest
from shardkit.cli import main
from shardkit.commands.memory import parse_count


def run(capsys, *argv):
    code = main(["memory", *argv])
    return code, capsys.readouterr()


def test_params_only_prints_the_rule_of_thumb(capsys):
    code, out = run(capsys, "--params", "7B")
    assert code == 0
    total_line = next(line for line in out.out.splitlines() if line.startswith("model states"))
    assert "16.00" in total_line and "104.31 GiB" in total_line


def test_json_compare_shows_what_each_strategy_saves(capsys):
    code, out = run(capsys, "--preset", "llama2-7b", "--world-size", "8", "--host-size", "4", "--compare", "--json")
    assert code == 0
    payload = json.loads(out.out)
    per_param = {name: est["model_state_bytes_per_param"] for name, est in payload.items()}
    assert per_param["NO_SHARD"] == pytest.approx(16)
    assert per_param["SHARD_GRAD_OP"] == pytest.approx(2 + 14 / 8)
    assert per_param["FULL_SHARD"] == pytest.approx(2)
    assert per_param["HYBRID"] == pytest.approx(4)


def test_shape_flags_and_checkpointing(capsys):
    shape = ["--vocab", "1000", "--hidden", "64", "--layers", "4", "--heads", "4", "--intermediate", "128", "--json"]
    _, none = run(capsys, *shape)
    _, every = run(capsys, *shape, "--checkpointing", "every_block")
    _, second = run(capsys, *shape, "--checkpointing", "2")

    def activations(out):
        return next(i["bytes"] for i in json.loads(out.out)["items"] if i["name"] == "activations")

    assert activations(none) > activations(second) > activations(every) > 0


def test_hf_config_json(capsys, tmp_path):
    config = {
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": 32000,
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "intermediate_size": 11008,
        "tie_word_embeddings": False,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    _, from_config = run(capsys, "--config", str(path), "--json")
    _, from_preset = run(capsys, "--preset", "llama2-7b", "--json")
    assert json.loads(from_config.out)["items"] == json.loads(from_preset.out)["items"]
    assert json.loads(from_config.out)["params"] == 6_738_415_616  # Llama-2-7B's published count


def test_plot_writes_a_png(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "memory.png"
    code, _ = run(capsys, "--params", "1B", "--world-size", "4", "--compare", "--plot", str(path))
    assert code == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--params", "7B", "--preset", "llama2-7b"], "exactly one"),
        ([], "exactly one"),
        (["--hidden", "64"], "--vocab"),
        (["--params", "7B", "--strategy", "ZERO1"], "strategy"),
        (["--params", "7B", "--strategy", "HYBRID", "--world-size", "4"], "host_size"),
        (["--params", "seven"], "7B"),
        (["--config", "/nonexistent/config.json"], "cannot read"),
        (["--vocab", "10", "--hidden", "64", "--layers", "1", "--heads", "3", "--intermediate", "8"], "hidden"),
    ],
)
def test_bad_input_exits_with_a_message(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["memory", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_parse_count():
    assert parse_count("135M") == 135_000_000 and parse_count("7e9") == 7 * 10**9 and parse_count("1_000") == 1000
