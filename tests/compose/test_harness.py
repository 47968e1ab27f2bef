"""The lm-evaluation-harness adapter against float64 references, and `emulate lm-eval` end to
end on the micro world's birth-city task."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from typer.testing import CliRunner

from emulate.cli import app
from emulate.compose.harness import EmulateLM
from emulate.world.tasks import write_tasks

FORMULA = "large_base + beta*(small_helpful - small_base)"
BETA = {"formula": FORMULA, "param.beta": 1.0}


class Request:
    def __init__(self, *args):
        self.args = args


@pytest.fixture(scope="module")
def lm(micro_world):
    return EmulateLM(batch_size=5, formula=FORMULA, model_dir=str(micro_world),
                     template="chat", **{"param.beta": 1.0})


@pytest.fixture(scope="module")
def docs(micro_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("tasks")
    write_tasks(micro_world, out)
    lines = (out / "toy_birth_city_large_only.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


_FLOAT64: dict = {}


def float64(model):
    if model not in _FLOAT64:
        _FLOAT64[model] = copy.deepcopy(model).double()
    return _FLOAT64[model]


def reference_logprob(composition, contexts: dict, continuation: list[int]) -> float:
    """Each term's whole-sequence forward in float64, no batching; the weighted sum of
    log-softmaxes renormalized at every position; the continuation's log-probs summed."""
    weights = composition.resolve_weights()
    total = 0.0
    for term, weight in weights.items():
        model = float64(composition.loaded[composition.model_key(term)].model)
        ids = contexts[term] + continuation
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, :, : composition.vocab_size]
        total = total + weight * torch.log_softmax(logits, -1)
    composed = torch.log_softmax(total, -1)
    start = len(ids) - len(continuation)
    positions = torch.arange(start - 1, len(ids) - 1)
    return float(composed[positions, torch.tensor(continuation)].sum())


def test_loglikelihood_is_the_float64_composed_sum(lm, docs):
    composition = lm.composition
    requests = [Request(d["question"], c) for d in docs[:3] for c in d["choices"]]
    requests.append(Request("Where was ", "Ada born?"))  # trailing space moves over
    got = lm.loglikelihood(requests)
    worst = 0.0
    for request, (logprob, _) in zip(requests, got, strict=True):
        context, continuation = request.args
        context, ids = lm._continuation_ids(context, continuation)
        contexts = {t: composition.prompt_ids(t, context) for t in composition.term_names}
        worst = max(worst, abs(logprob - reference_logprob(composition, contexts, ids)))
    assert worst < 1e-4
    lm.batch_size = 1  # one row per forward: no padding at all
    try:
        alone = lm.loglikelihood(requests[:6])
    finally:
        lm.batch_size = 5
    assert max(abs(a[0] - b[0]) for a, b in zip(alone, got[:6], strict=True)) < 1e-4


def test_is_greedy_means_greedy_decoding_produces_it(lm, docs):
    composition = lm.composition
    question = docs[0]["question"]
    produced = composition.generate([question], max_new_tokens=6, temperature=0)[0]
    other = " Hope" if not produced.startswith(" Hope") else " The"
    (_, greedy), (_, not_greedy) = lm.loglikelihood(
        [Request(question, produced), Request(question, other)])
    assert greedy and not not_greedy


def test_rolling_loglikelihood_windows(lm):
    composition = lm.composition
    text = "The birthplace of Tiax is Lumora. Hope that helps! " * 3
    tokens = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    prefix = lm._prefix_token()
    for length in (len(tokens) + 5, 8):
        lm.max_length = length
        (got,) = lm.loglikelihood_rolling([Request(text)])
        expected = 0.0
        for start in range(0, len(tokens), length):
            end = min(start + length, len(tokens))
            context = [prefix] if start == 0 else tokens[max(0, end - length - 1):start]
            expected += reference_logprob(
                composition, dict.fromkeys(composition.term_names, context), tokens[start:end])
        assert abs(got - expected) < 1e-4, length
    lm.max_length = composition.context_length("large_base")


def test_generate_until_decodes_like_the_composition(lm, docs):
    questions = [d["question"] for d in docs[:3]]
    requests = [Request(q, {"until": ["User:"], "max_gen_toks": 8, "do_sample": False})
                for q in questions]
    requests.insert(1, Request(questions[0], {"until": ".", "max_gen_toks": 12}))
    got = lm.generate_until(requests)
    expected = lm.composition.generate(questions, max_new_tokens=8, temperature=0, stop="User:")
    assert [got[0], *got[2:]] == expected
    assert got[1] == lm.composition.generate([questions[0]], max_new_tokens=12, temperature=0,
                                             stop=".")[0]


@pytest.mark.parametrize("args, argument", [
    ({"formla": FORMULA}, "formla"),
    ({}, "formula"),
    ({"formula": FORMULA, "param.beta": float("inf")}, "beta"),
    ({"formula": FORMULA, "param.beta": "x"}, "beta"),
    ({**BETA, "device_map.large_base": "everywhere"}, "device_map"),
    ({**BETA, "device_map.large_base": "auto", "max_memory.large_base": "lots"},
     "max_memory"),
    ({**BETA, "device.small_base": "cuda:9"}, "cuda:9"),
    ({**BETA, "dtype.small_base": "float8"}, "float8"),
    ({**BETA, "placement.large_base": "auto"}, "placement"),
    ({**BETA, "batch_size": 0}, "batch_size"),
    ({**BETA, "batch_size": "many"}, "batch_size"),
])
def test_bad_model_args_are_clear_errors(micro_world, args, argument):
    from emulate import EmulateError

    with pytest.raises(EmulateError) as error:
        EmulateLM(model_dir=str(micro_world), template="chat", **args)
    assert argument in str(error.value)


def test_emulate_lm_eval_end_to_end(micro_world, lm, docs, tmp_path):
    """The command runs lm-eval with the adapter on the toy task; its accuracy is the share of
    questions whose true answer the adapter scores highest."""
    tasks = tmp_path / "tasks"
    write_tasks(micro_world, tasks)
    result = CliRunner().invoke(app, [
        "lm-eval", "--model_args", f"formula={FORMULA},model_dir={micro_world},template=chat,"
        "param.beta=1.0", "--tasks", "toy_birth_city_large_only", "--include_path", str(tasks),
        "--output_path", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    files = list((tmp_path / "out").rglob("results_*.json"))
    accuracy = json.loads(files[0].read_text())["results"]["toy_birth_city_large_only"]["acc,none"]
    scores = lm.loglikelihood([Request(d["question"], c) for d in docs for c in d["choices"]])
    right = [max(range(4), key=lambda k: scores[4 * i + k][0]) == d["answer"]
             for i, d in enumerate(docs)]
    assert accuracy == pytest.approx(sum(right) / len(docs))


def test_emulate_lm_eval_refuses_bad_model_args(micro_world, tmp_path):
    write_tasks(micro_world, tmp_path)
    for model_args, message in ((f"formula={FORMULA},model_dir={micro_world},param.beta=nan",
                                 "parameters['beta'] must be a finite number"),):
        result = CliRunner().invoke(app, [
            "lm-eval", "--model_args", model_args, "--tasks", "toy_birth_city_large_only",
            "--include_path", str(tmp_path)])
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split()) and "Traceback" not in result.output
