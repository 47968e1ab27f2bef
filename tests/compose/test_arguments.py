"""Every public entry point refuses bad arguments with an EmulateError naming the argument.

The calls below are what a new user tries; each must fail before any decoding, with a message
that starts from the argument's name, never with a traceback from inside torch.
"""

from __future__ import annotations

import math

import pytest
from tiny_models import llama, make_tokenizer, save
from typer.testing import CliRunner

from emulate import Composition, EmulateError
from emulate.cli import app
from emulate.server.config import ConfigError, parse_config

INF, NAN = math.inf, math.nan


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("arguments")
    tokenizer = make_tokenizer()
    return {
        name: save(llama(len(tokenizer), hidden=16, layers=1, seed=seed), tokenizer, root / name)
        for seed, name in enumerate(["large", "chat", "small"])
    }


@pytest.fixture(scope="module")
def composition(paths):
    return Composition("large + beta*(chat - small)", paths, templates={"chat": "chat"},
                       parameters={"beta": 1.0})


BAD_PROMPTS = [
    ("a bare string", "Where was Ada born?", "prompts"),
    ("None", None, "prompts"),
    ("a number", 3, "prompts"),
    ("a float", 2.5, "prompts"),
    ("bytes", b"hello", "prompts"),
    ("a dict", {"prompt": "hi"}, "prompts"),
    ("an empty list", [], "prompts"),
    ("a list of numbers", [1, 2], "prompts[0]"),
    ("None inside", ["a", None], "prompts[1]"),
    ("a list of non-messages", [["hello"]], "prompts[0][0]"),
    ("an empty conversation", [[]], "prompts[0]"),
    ("role wizard", [[{"role": "wizard", "content": "hi"}]], "prompts[0][0]['role']"),
    ("role missing", [[{"content": "hi"}]], "prompts[0][0]"),
    ("content a number", [[{"role": "user", "content": 5}]], "prompts[0][0]['content']"),
    ("content missing", [[{"role": "user"}]], "prompts[0][0]"),
    ("an extra key", [[{"role": "user", "content": "x", "tool": 1}]], "prompts[0][0]"),
]

BAD_OPTIONS = [
    # (keyword arguments, the argument the message must name)
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(max_new_tokens=-3), "max_new_tokens"),
    (dict(max_new_tokens=1.5), "max_new_tokens"),
    (dict(max_new_tokens="5"), "max_new_tokens"),
    (dict(max_new_tokens=True), "max_new_tokens"),
    (dict(max_new_tokens=None), "max_new_tokens"),
    (dict(temperature=-1), "temperature"),
    (dict(temperature=NAN), "temperature"),
    (dict(temperature=INF), "temperature"),
    (dict(temperature=1e30), "temperature"),
    (dict(temperature="0.7"), "temperature"),
    (dict(temperature=None), "temperature"),
    (dict(temperature=True), "temperature"),
    (dict(top_p=0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(top_p=NAN), "top_p"),
    (dict(top_p="high"), "top_p"),
    (dict(top_k=-1), "top_k"),
    (dict(top_k=2.5), "top_k"),
    (dict(top_k="3"), "top_k"),
    (dict(min_p=1.0), "min_p"),
    (dict(min_p=-0.1), "min_p"),
    (dict(min_p=NAN), "min_p"),
    (dict(seed="42"), "seed"),
    (dict(seed=1.5), "seed"),
    (dict(seed=True), "seed"),
    (dict(seed=2**70), "seed"),
    (dict(seed=[1]), "seed"),
    (dict(stop=5), "stop"),
    (dict(stop=[""]), "stop[0]"),
    (dict(stop=["a", 3]), "stop[1]"),
    (dict(stop=[None]), "stop[0]"),
    (dict(stop={"x": 1}), "stop"),
    (dict(weights={"nope": 1.0}), "nope"),
    (dict(weights={"large": INF}), "weights['large']"),
    (dict(weights={"large": NAN}), "weights['large']"),
    (dict(weights={"large": 1e30}), "weights['large']"),
    (dict(weights={"large": "1"}), "weights['large']"),
    (dict(weights="large=1"), "weights"),
    (dict(weights={"large": 0, "chat": 0, "small": 0}), "weights"),
    (dict(parameters={"beta": INF}), "parameters['beta']"),
    (dict(parameters={"beta": -INF}), "parameters['beta']"),
    (dict(parameters={"beta": NAN}), "parameters['beta']"),
    (dict(parameters={"beta": 1e30}), "parameters['beta']"),
    (dict(parameters={"beta": "1"}), "parameters['beta']"),
    (dict(parameters={"gamma": 1.0}), "gamma"),
    (dict(parameters=[("beta", 1.0)]), "parameters"),
    (dict(plausibility=5), "plausibility"),
    (dict(plausibility="nope"), "plausibility"),
    (dict(plausibility="large:x"), "plausibility"),
    (dict(plausibility="large:2"), "plausibility top_p"),
    (dict(plausibility={"term": "large", "top_p": NAN}), "plausibility top_p"),
    (dict(plausibility={"trm": "large"}), "trm"),
    (dict(ignore_eos="yes"), "ignore_eos"),
    (dict(temprature=0.5), "temprature"),  # misspelt keywords, with a suggestion
    (dict(max_tokens=5), "max_tokens"),
    (dict(seeds=1), "seeds"),
    (dict(speculative="yes"), "speculative"),
    (dict(speculative={"kk": 3}), "speculative"),
    (dict(speculative={"k": 0}), "speculative k"),
    (dict(speculative={"draft": "nope"}), "nope"),
]


@pytest.mark.parametrize("what, prompts, argument", BAD_PROMPTS, ids=[c[0] for c in BAD_PROMPTS])
@pytest.mark.parametrize("entry", ["generate", "complete", "stream", "next_token_logprobs"])
def test_bad_prompts_are_refused_by_every_entry_point(composition, entry, what, prompts,
                                                      argument):
    with pytest.raises(EmulateError) as error:
        result = getattr(composition, entry)(prompts)
        list(result) if entry == "stream" else None
    assert argument in str(error.value), str(error.value)


@pytest.mark.parametrize("options, argument", BAD_OPTIONS, ids=[repr(o) for o, _ in BAD_OPTIONS])
@pytest.mark.parametrize("entry", ["generate", "stream"])
def test_bad_options_are_refused_by_every_entry_point(composition, entry, options, argument):
    with pytest.raises(EmulateError) as error:
        getattr(composition, entry)(["hi"], **{"max_new_tokens": 2, **options})
    assert argument in str(error.value), str(error.value)


def test_misspelt_keyword_gets_a_suggestion(composition):
    with pytest.raises(EmulateError, match="did you mean 'temperature'"):
        composition.generate(["hi"], temprature=0.5)


def test_one_stop_string_is_one_stop_string(composition):
    """stop="x" means the stop string "x", not its characters."""
    free = composition.generate(["The quick"], max_new_tokens=12, temperature=0)[0]
    assert len(free) > 2
    stop = free[1:3]
    as_string = composition.generate(["The quick"], max_new_tokens=12, temperature=0, stop=stop)
    as_list = composition.generate(["The quick"], max_new_tokens=12, temperature=0, stop=[stop])
    assert as_string == as_list == [free[: free.index(stop)]]


def test_good_arguments_still_work(composition):
    """The checks refuse only what is wrong: numpy-free ints, tuples, chats, one seed."""
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    out = composition.generate(("a", chat), max_new_tokens=2, temperature=0.5, seed=3,
                               stop=("zz",), top_k=5, plausibility="large:0.9",
                               parameters={"beta": 0.5}, weights={"small": -1})
    assert len(out) == 2


BAD_CONSTRUCTIONS = [
    (lambda p: Composition(None, p), "formula"),
    (lambda p: Composition(5, p), "formula"),
    (lambda p: Composition("large", None), "models"),
    (lambda p: Composition("large", {}), "models"),
    (lambda p: Composition("large", p["large"]), "models"),
    (lambda p: Composition("large", {"large": None}), "models['large']"),
    (lambda p: Composition("large", {"large": 5}), "models['large']"),
    (lambda p: Composition("large", {"large": ""}), "models['large']"),
    (lambda p: Composition("large", {"large": p["large"], "2x": p["small"]}), "2x"),
    (lambda p: Composition("large", p, templates="chat"), "templates"),
    (lambda p: Composition("large", p, templates={"large": 5}), "templates['large']"),
    (lambda p: Composition("large + beta*chat", p, parameters={"beta": INF}), "beta"),
    (lambda p: Composition("large + beta*chat", p, parameters={"beta": NAN}), "beta"),
    (lambda p: Composition("large + beta*chat", p, parameters={"beta": 1e30}), "beta"),
    (lambda p: Composition("large + beta*chat", p, parameters={"beta": "2"}), "beta"),
    (lambda p: Composition("large + beta*chat", p, parameters=[1.0]), "parameters"),
    (lambda p: Composition("1e30*large", p), "weights['large']"),
    (lambda p: Composition("large + 2*beta*chat", p, parameters={"beta": 600.0}),
     "weights['chat']"),
    (lambda p: Composition("large", p, lean="yes"), "lean"),
]


@pytest.mark.parametrize("build, argument", BAD_CONSTRUCTIONS,
                         ids=[str(i) for i in range(len(BAD_CONSTRUCTIONS))])
def test_bad_constructor_arguments_are_refused(paths, build, argument):
    with pytest.raises(EmulateError) as error:
        build(paths)
    assert argument in str(error.value), str(error.value)


def cli_args(paths):
    return ["generate", "--formula", "large + beta*(chat - small)", "--param", "beta=1.0",
            *[f"--model={n}={p}" for n, p in paths.items()], "--max-new-tokens", "2"]


@pytest.mark.parametrize("change, argument", [
    (["--param", "beta=inf"], "beta"),
    (["--param", "beta=nan"], "beta"),
    (["--param", "beta=1e30"], "beta"),
    (["--temperature", "nan"], "temperature"),
    (["--temperature", "1e30"], "temperature"),
    (["--top-p", "inf"], "top_p"),
    (["--plausibility", "large:nan"], "plausibility top_p"),
    (["--seed", "abc"], "seed"),
])
def test_the_command_line_refuses_the_same_values(paths, change, argument):
    result = CliRunner().invoke(app, [*cli_args(paths), *change, "hi"])
    assert result.exit_code == 2, result.output
    assert argument in " ".join(result.output.split()) and "Traceback" not in result.output


@pytest.mark.parametrize("parameters, where", [
    ({"beta": 1e30}, "parameters.beta"), ({"beta": ".inf"}, "parameters.beta"),
    ({"beta": "1"}, "parameters.beta"),
])
def test_the_server_config_refuses_the_same_values(parameters, where):
    import yaml

    text = yaml.safe_dump({"compositions": {"x": {"formula": "a + beta*b", "terms": {
        "a": "/m/a", "b": "/m/b"}, "parameters": parameters}}}).replace("'.inf'", ".inf")
    with pytest.raises(ConfigError, match=where):
        parse_config(yaml.safe_load(text))
