"""Bad input a user meets in the first week answers a clear error, alike at the Python API and
the command line: empty prompts, non-finite coefficients, a file or a folder without a
tokenizer where a checkpoint belongs."""

from __future__ import annotations

import shutil

import pytest
from tiny_models import llama, make_tokenizer, save
from typer.testing import CliRunner

from emulate import Composition
from emulate.cli import app
from emulate.common.errors import FormulaError, ModelLoadError
from emulate.compose.checks import EmptyPromptError


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny Llama whose tokenizer adds no BOS, so an empty text is no tokens at all."""
    tokenizer = make_tokenizer()
    tokenizer.add_bos_token = False
    return save(llama(len(tokenizer)), tokenizer, tmp_path_factory.mktemp("bad") / "m")


@pytest.fixture(scope="module")
def composition(checkpoint):
    return Composition("m", {"m": checkpoint})


@pytest.mark.parametrize("prompt", [
    "", [{"role": "user", "content": ""}],
    [{"role": "system", "content": ""}, {"role": "user", "content": ""}],
], ids=["text", "chat", "all-empty-chat"])
def test_an_empty_prompt_is_refused(composition, prompt):
    with pytest.raises(EmptyPromptError, match=r"prompts\[0\]: the prompt is empty"):
        composition.generate([prompt], max_new_tokens=2)
    with pytest.raises(EmptyPromptError, match="empty"):
        composition.next_token_logprobs(["fine", prompt])


def test_prompts_with_some_text_still_decode(checkpoint):
    chat = Composition("m", {"m": checkpoint}, templates={"m": "{prompt}"})
    assert chat.generate([" "], max_new_tokens=1, temperature=0)  # some text: tokens
    system_only = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": ""}]
    assert chat.generate([system_only], max_new_tokens=1, temperature=0)


def test_the_command_line_refuses_an_empty_prompt(checkpoint):
    result = CliRunner().invoke(app, ["generate", "--formula", "m", "--model", f"m={checkpoint}",
                                      "--max-new-tokens", "2", ""])
    assert result.exit_code == 2 and "the prompt is empty" in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("formula", ["nan*m", "m - inf*m", "Infinity*m", "1e999*m"])
def test_non_finite_coefficients_are_refused(checkpoint, formula):
    with pytest.raises(FormulaError, match="finite"):
        Composition(formula, {"m": checkpoint})


def test_a_file_or_a_folder_without_a_tokenizer_is_not_a_checkpoint(checkpoint, tmp_path):
    with pytest.raises(ModelLoadError, match="is a file, not a checkpoint directory"):
        Composition("m", {"m": f"{checkpoint}/config.json"})
    bare = shutil.copytree(checkpoint, tmp_path / "bare")
    (bare / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match="has no tokenizer"):
        Composition("m", {"m": str(bare)})
