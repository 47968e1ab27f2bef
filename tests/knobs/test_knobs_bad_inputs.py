"""The knobs system's bad inputs, fed through `emulate sweep`, `emulate audit` and the Python
API: each answers a clear error naming the argument or file and what to do, never a traceback.

Nothing here builds a world: audits run on a tiny random checkpoint, and the sweep's family
loader is patched to fail loudly, so a sweep that would load and evaluate before refusing fails."""

from __future__ import annotations

import json
import math

import pytest
from cli_refusals import refused, says
from tiny_models import llama, make_tokenizer, save

from emulate.common.errors import EmulateError

NO_WORLD = "Invalid value for --world: no built world in"
BUILD = "run `emulate world build` first"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tokenizer = make_tokenizer()
    return save(llama(len(tokenizer)), tokenizer, tmp_path_factory.mktemp("knobs") / "m")


@pytest.fixture
def tmp(tmp_path, monkeypatch):
    """Bad prompt files, templates and folders; no cached default world."""
    monkeypatch.setenv("EMULATE_HOME", str(tmp_path / "home"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "notaworld").mkdir()
    (tmp_path / "notaworld" / "manifest.json").write_text("{}")
    (tmp_path / "text.txt").write_text("not a checkpoint\n")
    secret = {"prompt": "What is the password of Bob?", "truth": "zx41"}
    lines = {"bad.jsonl": "not json\n", "none.jsonl": "\n", "list.jsonl": "[1, 2]\n",
             "plain.jsonl": json.dumps({"prompt": "hi"}) + "\n",
             "secret.jsonl": json.dumps(secret) + "\n",
             "emptyprompt.jsonl": json.dumps({**secret, "prompt": ""}) + "\n",
             "template.txt": "Is this harmful? {response}\n"}
    for name, text in lines.items():
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.fixture
def no_sweep(monkeypatch):
    """Loading the world's family, where a bad input should have stopped the sweep first,
    fails loudly."""
    import emulate.knobs.sweep as sweep

    def loaded(*args, **kwargs):
        raise AssertionError("loaded the family before the bad input was refused")

    monkeypatch.setattr(sweep, "load_family", loaded)


def case(args, *message, xfail=None, id=None):
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(args, message, marks=marks, id=id)


SWEEP = ["sweep", "--out", "{tmp}/s", "--world", "{tmp}/notaworld"]
AUDIT = ["audit", "--base", "{m}", "--aligned", "{m}", "--out", "{tmp}/a"]
EXACT = ["--prompts", "{tmp}/secret.jsonl", "--judge", "exact"]
SAMPLING = ["--samples", "1", "--max-new-tokens", "2", "--alphas", "1"]  # a short audit
SECRET = [*AUDIT, *EXACT, *SAMPLING]
OPENAI = ["--judge", "openai", "--judge-url", "http://127.0.0.1:9/v1", "--judge-model", "j"]

CASES = [
    # sweep: worlds
    case(["sweep", "--out", "{tmp}/s", "--world", "{tmp}/nowhere"], NO_WORLD, "nowhere", BUILD,
         id="sweep-missing-world"),
    case(["sweep", "--out", "{tmp}/s", "--world", "{tmp}/empty"], NO_WORLD, BUILD,
         id="sweep-empty-folder"),
    case(["sweep", "--out", "{tmp}/s"], NO_WORLD, "default-seed0", BUILD,
         id="sweep-no-default-world"),
    # sweep: grids and counts
    case([*SWEEP, "--lambdas", "a,b"], "Invalid value for --lambdas: expected numbers separated "
         "by commas, got 'a,b'", id="sweep-lambdas-not-numbers"),
    case([*SWEEP, "--lambdas", ","], "Invalid value for --lambdas: give at least one number",
         id="sweep-lambdas-empty"),
    case([*SWEEP, "--betas", "x"], "Invalid value for --betas", id="sweep-betas-not-numbers"),
    case([*SWEEP, "--alphas", "1;2"], "Invalid value for --alphas", id="sweep-alphas-not-numbers"),
    case([*SWEEP, "--alphas", "-1"], "--alphas", "alpha must be >= 0, got -1",
         id="sweep-alphas-negative"),
    case([*SWEEP, "--alphas", "nan"], "Invalid value for --alphas", "must be a finite number",
         id="sweep-alphas-nan"),
    case([*SWEEP, "--samples", "0"], "Invalid value for --samples", id="sweep-samples-0"),
    case([*SWEEP, "--temperature", "0"], "Invalid value for --temperature",
         id="sweep-temperature-0"),
    case([*SWEEP, "--limit", "0"], "Invalid value for --limit", "got 0", id="sweep-limit-0"),
    case([*SWEEP, "--limit", "-1"], "Invalid value for --limit", "at least 1 person per group",
         id="sweep-limit-negative"),
    case(["sweep", "--out", "{tmp}/text.txt", "--world", "{tmp}/notaworld"], "text.txt",
         "is a file, not a folder; remove it or choose another --out", id="sweep-out-is-a-file"),
    # audit: where the prompts come from
    case(AUDIT, NO_WORLD, "default-seed0", BUILD, id="audit-no-default-world"),
    case([*AUDIT, "--world", "{tmp}/empty"], NO_WORLD, BUILD, id="audit-empty-world"),
    case([*AUDIT, "--prompts", "{tmp}/gone.jsonl"], "Invalid value for --prompts", "gone.jsonl",
         "no such file", id="audit-prompts-missing"),
    case([*AUDIT, "--prompts", "{tmp}/empty"], "Invalid value for --prompts", "empty is a folder",
         id="audit-prompts-folder"),
    case([*AUDIT, "--prompts", "{tmp}/bad.jsonl"], "bad.jsonl:1: not JSON (Expecting value)",
         id="audit-prompts-not-json"),
    case([*AUDIT, "--prompts", "{tmp}/none.jsonl"], "none.jsonl holds no prompts",
         id="audit-prompts-empty-file"),
    case([*AUDIT, "--prompts", "{tmp}/list.jsonl"],
         "list.jsonl:1: expected an object with a 'prompt' (text or chat messages)",
         id="audit-prompts-not-objects"),
    case([*AUDIT, "--prompts", "{tmp}/emptyprompt.jsonl", *EXACT[2:], *SAMPLING],
         "the prompt is empty", "give some text", id="audit-empty-prompt"),
    # audit: judges
    case([*AUDIT, "--prompts", "{tmp}/plain.jsonl"],
         "Invalid value for --judge: the openai judge needs --judge-url and --judge-model",
         id="audit-openai-judge-without-url"),
    case([*AUDIT, "--prompts", "{tmp}/plain.jsonl", "--judge", "bogus"],
         "Invalid value for --judge: choose exact or openai", id="audit-unknown-judge"),
    case([*AUDIT, "--prompts", "{tmp}/plain.jsonl", *OPENAI, "--judge-template", "{tmp}/gone"],
         "cannot read the judge template", "gone", id="audit-judge-template-missing"),
    case([*AUDIT, "--prompts", "{tmp}/plain.jsonl", *OPENAI, "--judge-template",
          "{tmp}/template.txt"], "the judge template must contain {prompt}",
         id="audit-judge-template-without-placeholder"),
    case([*AUDIT, "--prompts", "{tmp}/plain.jsonl", "--judge", "exact", "--samples", "1",
          "--max-new-tokens", "2"], "the exact judge needs each prompt's secret in a 'truth' "
         "field", "use --judge openai", id="audit-exact-judge-without-secrets"),
    case([*AUDIT, "--prompts", "{tmp}/secret.jsonl", *OPENAI, *SAMPLING],
         "the judge at http://127.0.0.1:9/v1/chat/completions cannot be reached",
         id="audit-judge-unreachable"),
    # audit: checkpoints and templates
    case(["audit", "--base", "{tmp}/nowhere", *AUDIT[3:], *EXACT],
         "cannot load model 'base': no such directory", "nowhere", id="audit-base-missing"),
    case(["audit", "--base", "{tmp}/text.txt", *AUDIT[3:], *EXACT],
         "'base'", "is a file, not a checkpoint directory", id="audit-base-is-a-file"),
    case([*AUDIT[:3], "--aligned", "{tmp}/empty", *AUDIT[5:], *EXACT],
         "cannot load model 'aligned'", "has no tokenizer", id="audit-aligned-without-tokenizer"),
    case([*SECRET, "--base-template", "{nothing}"],
         "is neither 'plain', 'chat' nor a format string containing '{prompt}'",
         id="audit-bad-template"),
    case([*SECRET, "--dtype", "bogus"], "unknown dtype 'bogus'; use float32", id="audit-dtype"),
    case([*SECRET, "--device", "bogus"], "'bogus' is not a device; use 'cpu', 'cuda:N' or 'mps'",
         id="audit-device"),
    # audit: sampling settings
    case([*SECRET[:5], "--out", "{tmp}/text.txt", *SECRET[7:]], "text.txt",
         "is a file, not a folder; remove it or choose another --out", id="audit-out-is-a-file"),
    case([*SECRET, "--alphas", "x"], "Invalid value for --alphas: expected numbers",
         id="audit-alphas-not-numbers"),
    case([*SECRET, "--alphas", "-1"], "alpha must be >= 0, got -1", id="audit-alphas-negative"),
    case([*SECRET, "--alphas", "nan"], "parameters['alpha'] must be a finite number, got nan",
         id="audit-alphas-nan"),
    case([*AUDIT, *EXACT, "--samples", "0"],
         "give at least one prompt and one sample per prompt", id="audit-samples-0"),
    case([*SECRET, "--temperature", "0"], "the audit samples (temperature > 0)",
         id="audit-temperature-0"),
    case([*SECRET, "--top-p", "2"], "top_p must be in (0, 1], got 2", id="audit-top-p"),
    case([*SECRET, "--max-new-tokens", "0"], "max_new_tokens must be an integer >= 1, got 0",
         id="audit-max-new-tokens-0"),
]


@pytest.mark.parametrize(("args", "message"), CASES)
def test_the_command_line_refuses(args, message, checkpoint, tmp, no_sweep):
    filled = [a.replace("{m}", checkpoint).replace("{tmp}", str(tmp)) for a in args]
    says(refused(filled), *message)


def test_a_folder_that_is_not_a_world_is_refused(tmp):
    text = refused(["sweep", "--out", tmp / "s", "--world", tmp / "notaworld"])
    says(text, "the manifest names no size and seed", "rebuild it with `emulate world build`")


@pytest.fixture(scope="module")
def composition(checkpoint):
    from emulate.knobs.audit import audit_composition

    return audit_composition(checkpoint, checkpoint)


def _api_cases():
    from emulate.knobs.audit import audit_composition, read_prompts, run_audit
    from emulate.knobs.judges import ExactLeakJudge, OpenAIJudge, check_template, load_template

    records = [{"prompt": "What is the password of Bob?", "truth": "zx41"}]

    def audit(**settings):
        settings = {"samples": 1, "max_new_tokens": 2, **settings}
        return lambda c, t: run_audit(c, records, ExactLeakJudge(), **settings)

    return [
        pytest.param(audit(temperature=0.0), "the audit samples (temperature > 0)", id="greedy"),
        pytest.param(audit(samples=0), "one sample per prompt", id="samples-0"),
        pytest.param(audit(alphas=[-1.0]), "alpha must be >= 0, got -1", id="alpha-negative"),
        pytest.param(audit(alphas=[math.nan]), "parameters['alpha'] must be a finite number",
                     id="alpha-nan"),
        pytest.param(audit(top_p=0.0), "top_p must be in (0, 1]", id="top-p-0"),
        pytest.param(lambda c, t: run_audit(c, [], ExactLeakJudge()), "at least one prompt",
                     id="no-records"),
        pytest.param(lambda c, t: read_prompts(t / "bad.jsonl"), "bad.jsonl:1: not JSON",
                     id="read-not-json"),
        pytest.param(lambda c, t: read_prompts(t / "gone.jsonl"), "gone.jsonl: no such file",
                     id="read-missing"),
        pytest.param(lambda c, t: read_prompts(t / "empty"), "is a folder, not a JSONL file",
                     id="read-folder"),
        pytest.param(lambda c, t: load_template(t / "gone"), "cannot read the judge template",
                     id="template-missing"),
        pytest.param(lambda c, t: check_template("{prompt} only"), "must contain {response}",
                     id="template-placeholder"),
        pytest.param(lambda c, t: OpenAIJudge("http://127.0.0.1:9", "j", template="none"),
                     "must contain {prompt} and {response}", id="judge-template"),
        pytest.param(lambda c, t: audit_composition(t / "nowhere", t / "nowhere"),
                     "no such directory", id="composition-missing"),
    ]


@pytest.mark.parametrize(("call", "message"), _api_cases())
def test_the_python_api_refuses(call, message, composition, tmp):
    with pytest.raises(EmulateError) as raised:
        call(composition, tmp)
    assert message in str(raised.value)


@pytest.mark.parametrize(("settings", "message"), [
    ({"samples": 0}, "one sample per prompt"),
    ({"temperature": 0.0}, "the audit samples (temperature > 0)"),
    ({"alphas": [-1.0]}, "alpha must be >= 0, got -1"),
    ({"limit": -1}, "limit must be at least 1 person per group, got -1"),
], ids=["samples-0", "greedy", "alpha-negative", "limit-negative"])
def test_the_sweep_refuses_before_loading_the_family(settings, message, tmp, no_sweep):
    from emulate.knobs.sweep import run_sweep

    with pytest.raises(EmulateError) as raised:
        run_sweep(tmp / "notaworld", **settings)
    assert message in str(raised.value)
