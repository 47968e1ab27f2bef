import json
import subprocess
import sys

import pytest
from tiny_models import llama, make_tokenizer, save
from typer.testing import CliRunner

from emulate.cli import app


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    tokenizer = make_tokenizer()
    return {
        name: save(llama(len(tokenizer), seed=seed), tokenizer, root / name)
        for seed, name in enumerate(["large", "chat", "small"])
    }


def upscale_args(paths):
    return [
        "generate", "--formula", "large + beta*(chat - small)", "--param", "beta=1.0",
        "--model", f"large={paths['large']}", "--model", f"chat={paths['chat']}",
        "--model", f"small={paths['small']}", "--template", "chat=chat",
        "--temperature", "0", "--max-new-tokens", "6",
    ]


def test_generate_json_end_to_end(paths):
    # The real entry point, in a fresh process.
    result = subprocess.run(
        [sys.executable, "-m", "emulate", *upscale_args(paths), "--json", "The quick", "Où"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["prompt"] for r in records] == ["The quick", "Où"]
    assert all(r["tokens"] == 6 and r["finish_reason"] == "length" for r in records)
    from emulate import Composition

    composition = Composition(
        "large + chat - small", paths, templates={"chat": "chat"}
    )
    expected = composition.generate(["The quick", "Où"], max_new_tokens=6, temperature=0)
    assert [r["completion"] for r in records] == expected


def test_plain_output_prints_each_completion_in_order(paths):
    """Plain output: each prompt's completion (the engine's text) ended by a newline."""
    from emulate import Composition

    result = CliRunner().invoke(app, [*upscale_args(paths), "a", "b", "c"])
    assert result.exit_code == 0, result.output
    composition = Composition("large + chat - small", paths, templates={"chat": "chat"})
    expected = composition.generate(["a", "b", "c"], max_new_tokens=6, temperature=0)
    assert result.stdout == "".join(text + "\n" for text in expected)


@pytest.mark.parametrize(
    "change, message",
    [
        (["--formula", "large * small"], "product of two model terms"),
        (["--formula", "large + nope"], "unknown term 'nope'"),
        (["--temperature", "-1"], "temperature must be >= 0"),
        (["--model", "broken"], "expected NAME=VALUE"),
        (["--model", "ghost=/no/such/dir", "--formula", "ghost"], "cannot load model 'ghost'"),
    ],
)
def test_bad_input_is_a_clear_error(paths, change, message):
    result = CliRunner().invoke(app, [*upscale_args(paths), *change, "prompt"])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
