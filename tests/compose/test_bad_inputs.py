"""Bad input a user meets in the first week answers a clear error, alike at the Python API and
the command line: empty prompts, non-finite coefficients, a file or a folder without a
tokenizer where a checkpoint belongs; then a catalogue of the `generate`, `placement`, `world`,
`eval` and `demo` commands' bad inputs, each refused by name with no traceback."""

from __future__ import annotations

import shutil

import pytest
from cli_refusals import refused, says
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


# ---- the command line's catalogue: every bad input a clear error, never a traceback ----------

def case(args, *message, xfail=None, id=None):
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(args, message, marks=marks, id=id)


GEN = ["generate", "--formula", "m", "--model", "m={m}", "--max-new-tokens", "2"]
NO_WORLD = "(no readable manifest.json); build it: `emulate world build --out"
CLI_CASES = [
    # formulas, models, templates, parameters
    case(["generate", "--formula", "", "--model", "m={m}", "hi"], "the formula is empty",
         "write e.g. 'large + 1.0*(chat_small - small)'", id="formula-empty"),
    case(["generate", "--formula", "m +", "--model", "m={m}", "hi"], "syntax error in formula",
         id="formula-syntax"),
    case(["generate", "--formula", "nan*m", "--model", "m={m}", "hi"],
         "'nan' is not a number a formula can use: coefficients must be finite",
         id="formula-nan"),
    case(["generate", "--formula", "m", "--model", "x={m}", "hi"],
         "unknown term 'm': no model is named 'm' (known names: x)", id="formula-unknown-term"),
    case([*GEN[:3], "--model", "m", "hi"],
         "Invalid value for --model: expected NAME=VALUE, got 'm'", id="model-not-a-pair"),
    case([*GEN[:3], "--model", "m={tmp}/nowhere", "hi"], "cannot load model 'm': no such directory",
         id="model-missing"),
    case([*GEN[:3], "--model", "m={tmp}/text.txt", "hi"], "is a file, not a checkpoint directory",
         "Give the directory that holds it", id="model-is-a-file"),
    case([*GEN[:3], "--model", "m={tmp}", "hi"], "has no tokenizer",
         "Save the tokenizer into it", id="model-without-tokenizer"),
    case([*GEN, "--model", "m={m}", "hi"], "Invalid value for --model: 'm' is given twice",
         "give each NAME once", id="model-name-twice"),
    case([*GEN, "--param", "beta=1", "--param", "beta=2", "hi"],
         "Invalid value for --param: 'beta' is given twice", id="param-name-twice"),
    case([*GEN, "--template", "m=bogus", "hi"],
         "template 'bogus' is neither 'plain', 'chat' nor a format string containing '{prompt}'",
         id="template-unknown"),
    case([*GEN, "--template", "x=chat", "hi"], "templates given for ['x'], which name no model",
         id="template-for-no-model"),
    case([*GEN, "--param", "beta", "hi"], "Invalid value for --param: expected NAME=VALUE",
         id="param-not-a-pair"),
    case([*GEN, "--param", "beta=abc", "hi"], "Invalid value for --param", "'abc'",
         id="param-not-a-number"),
    # prompts and sampling
    case(GEN, "Missing argument 'prompts'", id="no-prompt"),
    case([*GEN, "--max-new-tokens", "0", "hi"], "max_new_tokens must be an integer >= 1, got 0",
         id="max-new-tokens-0"),
    case([*GEN, "--top-p", "0", "hi"], "top_p must be in (0, 1], got 0", id="top-p-0"),
    case([*GEN, "--top-k", "-1", "hi"], "top_k must be an integer >= 0 (0 = off), got -1",
         id="top-k-negative"),
    case([*GEN, "--min-p", "2", "hi"], "min_p must be in [0, 1), got 2", id="min-p-2"),
    case([*GEN, "--stop", "", "hi"], "stop[0] must be a non-empty string", id="stop-empty"),
    case([*GEN, "--plausibility", "nope", "hi"], "plausibility filter names unknown term 'nope'",
         id="plausibility-unknown-term"),
    case([*GEN, "--plausibility", "m:2", "hi"], "plausibility top_p must be in (0, 1], got 2",
         id="plausibility-top-p"),
    case([*GEN, "--plausibility", "m:abc", "hi"],
         "plausibility must be 'TERM' or 'TERM:TOP_P', got 'm:abc'", id="plausibility-malformed"),
    # speculation
    case([*GEN, "--k", "-1", "hi"], "speculative k must be an integer in [1, k_max = 16], got -1",
         id="k-negative"),
    case([*GEN, "--k", "0", "hi"], "speculative k must be an integer in [1, k_max = 16], got 0",
         "to decode without speculation, leave out --k, --draft and --speculative", id="k-0"),
    case([*GEN[:3], "--model", "m={tmp}/nowhere", "--k", "0", "hi"], "got 0 (--k)",
         id="k-0-before-loading"),
    case([*GEN, "--draft", "nope", "hi"], "unknown term 'nope'", id="draft-unknown-term"),
    # placement
    case([*GEN, "--device", "bogus", "hi"], "'bogus' is not a device; use 'cpu', 'cuda:N'",
         id="device-unknown"),
    case([*GEN, "--dtype", "bogus", "hi"], "unknown dtype 'bogus'; use float32", id="dtype"),
    case([*GEN, "--device-map", "m=bogus", "hi"], "device_map 'bogus' is not one of auto",
         id="device-map-unknown"),
    case([*GEN, "--max-memory", "m=lots", "hi"], "--max-memory 'lots': write DEVICE:SIZE pairs",
         id="max-memory-malformed"),
    case(["placement", "{m}", "--max-memory", "lots"], "--max-memory 'lots'",
         "e.g. 0:40GiB,1:40GiB,cpu:100GiB", id="placement-memory-malformed"),
    case(["placement", "{m}", "--max-memory", "0:-1GiB"], "'-1GiB' is not a size",
         id="placement-memory-negative"),
    case(["placement", "{m}", "--max-memory", "0:10GiB", "--dtype", "bogus"],
         "unknown dtype 'bogus'", id="placement-dtype"),
    case(["placement", "{m}", "--max-memory", "0:10GiB", "--strategy", "bogus"],
         "strategy 'bogus' is not one of auto, balanced", id="placement-strategy"),
    case(["placement", "{tmp}/nowhere", "--max-memory", "0:10GiB"], "nowhere",
         "no such file or folder, nor a model id in the hub cache", id="placement-missing-path"),
    case(["placement", "{tmp}/empty", "--max-memory", "0:10GiB"], "empty' holds no config.json",
         id="placement-folder-without-config"),
    case(["placement", "{tmp}/text.txt", "--max-memory", "0:10GiB"], "holds no config.json",
         id="placement-file-beside-no-config"),
    # toy worlds
    case(["world", "build", "--size", "huge", "--out", "{tmp}/w"], "unknown world size 'huge'",
         id="world-build-size"),
    case(["world", "build", "--size", "micro", "--out", "{tmp}/text.txt"],
         "is a file, not a build folder; remove it or choose another --out",
         id="world-build-out-file"),
    case(["world", "tasks", "--world", "{tmp}/nowhere"], "Invalid value for --world: no built "
         "world in", "run `emulate world build` first", id="world-tasks-missing"),
    case(["eval", "--formula", "small_base", "--world", "{tmp}/nowhere"], "nowhere holds no built",
         NO_WORLD,
         id="eval-missing-world"),
    case(["eval", "--formula", "small_base", "--world", "{tmp}/empty"], NO_WORLD,
         id="eval-empty-folder"),
    case(["eval", "--formula", "small_base", "--world", "{tmp}/notaworld"],
         "the manifest names no size and seed", "rebuild it with `emulate world build`",
         id="eval-not-a-world"),
    case(["eval", "--formula", "small_base"], "default-seed0", NO_WORLD, id="eval-no-default"),
    case(["demo", "--world", "{tmp}/empty"], NO_WORLD, id="demo-empty-folder"),
    case(["demo", "--world", "{tmp}/notaworld"], "the manifest names no size and seed",
         id="demo-not-a-world"),
    case(["demo", "--size", "huge"], "unknown world size 'huge'", "choose one of micro, default",
         id="demo-unknown-size"),
]


@pytest.fixture
def tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("EMULATE_HOME", str(tmp_path / "home"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "notaworld").mkdir()
    (tmp_path / "notaworld" / "manifest.json").write_text("{}")
    (tmp_path / "text.txt").write_text("not a checkpoint\n")
    return tmp_path


@pytest.mark.parametrize(("args", "message"), CLI_CASES)
def test_the_command_line_refuses(args, message, checkpoint, tmp):
    filled = [a.replace("{m}", str(checkpoint)).replace("{tmp}", str(tmp)) for a in args]
    says(refused(filled), *message)
