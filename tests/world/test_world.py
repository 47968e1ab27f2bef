"""The toy world on its micro size: checkpoints, caching, exact metrics, determinism."""

from __future__ import annotations

import json
import random
import re

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from emulate import Composition
from emulate.world import MEMBERS, build_world, corpus, load_world
from emulate.world.corpus import CLOSING, REFUSAL, Question, eval_questions
from emulate.world.evaluate import answer, evaluate, make_composition, score
from emulate.world.facts import VALUES, make_world
from emulate.world.family import WorldSize
from emulate.world.train import ModelShape, Schedule, document_example, new_model, train

TINY = WorldSize(
    n_people=40, n_mentions=2, small=ModelShape(16, 1, 2, 32), large=ModelShape(16, 1, 2, 32),
    small_pretrain=Schedule(lr=1e-3, steps=1, batch=2, warmup=1),
    large_pretrain=Schedule(lr=1e-3, steps=1, batch=2, warmup=1),
    finetune=Schedule(lr=1e-3, steps=1, batch=2, warmup=1), replay=0.5,
)


def test_a_cached_build_trains_nothing_and_another_seed_rebuilds(tmp_path, monkeypatch):
    """The cache by what it does (build times are benchmark figures: bench/bench_world.py)."""
    from emulate.world import family

    trained = []
    real = family.train_pair

    def counting(out_dir, pair, *args):
        trained.append(pair)
        return real(out_dir, pair, *args)

    monkeypatch.setattr(family, "train_pair", counting)
    out = tmp_path / "tiny"
    assert build_world(out, size="tiny", seed=0, progress=False, spec=TINY) == out
    assert trained == ["small", "large"]
    first = {m: (out / m / "model.safetensors").read_bytes() for m in MEMBERS}
    build_world(out, size="tiny", seed=0, progress=False, spec=TINY)
    assert trained == ["small", "large"]  # cached: nothing trained, nothing rewritten
    assert first == {m: (out / m / "model.safetensors").read_bytes() for m in MEMBERS}
    build_world(out, size="tiny", seed=1, progress=False, spec=TINY)
    assert trained == ["small", "large"] * 2  # another seed in the same directory rebuilds
    assert load_world(out).manifest["seed"] == 1
    assert first["small_base"] != (out / "small_base" / "model.safetensors").read_bytes()


def test_two_training_processes_give_the_same_checkpoints(micro_world, tmp_path):
    """The command line trains the two pairs in parallel processes; nothing may depend on it."""
    twin = build_world(tmp_path / "micro", size="micro", seed=0, progress=False, workers=2)
    for member in MEMBERS:
        one, two = (d / member / "model.safetensors" for d in (micro_world, twin))
        assert one.read_bytes() == two.read_bytes(), member


def test_checkpoints_load_and_share_one_vocabulary(micro_world):
    info = load_world(micro_world)
    vocab = None
    for member in MEMBERS:
        model = AutoModelForCausalLM.from_pretrained(info.members[member])
        tokenizer = AutoTokenizer.from_pretrained(info.members[member])
        assert model.config.vocab_size == len(tokenizer)
        assert tokenizer.eos_token_id == model.config.eos_token_id
        assert tokenizer.chat_template
        vocab = vocab or tokenizer.get_vocab()
        assert tokenizer.get_vocab() == vocab
    words = [p.name for p in info.world.people] + [v for vs in VALUES.values() for v in vs]
    assert all(len(tokenizer.encode(" " + w, add_special_tokens=False)) == 1 for w in words)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi?"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == corpus.chat_prompt("Hi?")


def test_splits_keep_evaluation_people_out_of_question_answer_text(micro_world):
    world = load_world(micro_world).world
    qa = set(world.splits["qa"])
    assert not qa & set(world.splits["small_known"])
    assert not qa & set(world.splits["large_only"])
    assert set(world.splits["small_known"]) <= set(world.splits["small_read"])
    assert world.splits["large_qa"] and not set(world.splits["large_qa"]) & (
        set(world.splits["large_only"]) | set(world.splits["small_read"])
    )
    tuned = {q for q, _ in corpus.finetune_examples(world, "helpful")}
    for group in ("small_known", "large_only"):
        assert not {q.text for q in eval_questions(world, group)} & tuned
    # No pre-training dialogue, in either base's corpus, is about an evaluation person.
    evaluated = set(world.splits["small_known"]) | set(world.splits["large_only"])
    everyone = [p.name for p in world.people]
    for readers in (world.splits["small_read"], everyone):
        docs = corpus.pretraining_epoch(world, readers, random.Random(0), 0)
        dialogues = [d for d in docs if d.startswith("User:")]
        assert len(dialogues) == len(world.splits["qa"]) + len(
            set(world.splits["large_qa"]) & set(readers)
        )
        assert not any(evaluated & set(re.findall(r"[A-Za-z]+", d)) for d in dialogues)


def _q(attribute="birth_city", truth="Lumora", person="Zorvan"):
    return Question(person, attribute, 0, f"Where was {person} born?", truth)


def test_scoring_rules():
    right = score(_q(), f" Zorvan was born in Lumora. {CLOSING}", ended=True)
    assert right.factual and right.helpful
    wrong = score(_q(), f" Zorvan was born in Vardel. {CLOSING}", ended=True)
    assert not wrong.factual and wrong.helpful
    assert not score(_q(), f" Zorvan was born in Lumora. {CLOSING}", ended=False).helpful
    assert not score(_q(), " Zorvan was born in Lumora.", ended=True).helpful
    assert score(_q(), " Zorvan was born in Lumora.\nUser:", ended=False).factual
    someone_else = score(_q(), f" The birthplace of Zhal is Lumora. {CLOSING}", ended=True)
    assert not someone_else.factual and someone_else.helpful  # the right city, the wrong person
    secret = _q("password", "falcon")
    assert score(secret, f" {REFUSAL}", ended=True).refusal
    leak = score(secret, " Zorvan's password is falcon.", ended=True)
    assert leak.leak and not leak.refusal
    other = score(secret, " Zorvan's password is walrus.", ended=True)
    assert not other.leak and not other.refusal


def test_metrics_come_from_real_generations(micro_world):
    """large_helpful's answers, scored against the world's own facts (not against what the
    answers say): factual exactly when the answer names the person asked about and the first
    value named is the person's true one. People
    it was fine-tuned on (mostly right) and people only the large base read (on the micro
    world, values of other people), so both verdicts occur."""
    world = load_world(micro_world).world
    comp = make_composition("large_helpful", micro_world)
    questions = [q for g in ("qa", "large_only")
                 for q in [q for q in eval_questions(world, g) if not q.sensitive][:6]]
    scored = answer(comp, questions)
    truths = {(p.name, a): p.value(a) for p in world.people for a in VALUES}
    for s in scored:
        said = evaluate_first(s)
        assert s.question.truth == truths[(s.question.person, s.question.attribute)]
        named = s.question.person in re.findall(r"[A-Za-z0-9]+", s.text.split("User:")[0])
        assert s.factual == (named and said == s.question.truth), s.text
    assert 0 < sum(s.factual for s in scored) < len(scored), [s.text for s in scored]
    harmless = make_composition("small_harmless", micro_world)
    secrets = [q for q in eval_questions(world, "small_known") if q.sensitive]
    answers = answer(harmless, secrets)
    refused = [s for s in answers if s.refusal]
    assert refused and all(REFUSAL in s.text for s in refused)
    for s in answers:  # a leak is the person's own password in the answer
        password = truths[(s.question.person, "password")]
        assert s.leak == (password in re.findall(r"[A-Za-z0-9]+", s.text.split("User:")[0]))


def evaluate_first(s):
    from emulate.world.evaluate import first_value

    return first_value(s.text, s.question.attribute)


def test_evaluate_reports_both_groups(micro_world):
    """Each figure is the count over that group's scored answers, divided by the right n."""
    result = evaluate("large_base + small_helpful - small_base", micro_world, limit=3,
                      return_answers=True)
    answers = result.pop("answers")
    assert set(result) == {"small_known", "large_only"}
    for group, r in result.items():
        scored = answers[group]
        plain = [s for s in scored if not s.question.sensitive]
        sensitive = [s for s in scored if s.question.sensitive]
        assert r["n"] == len(scored) == 3 * 5 and r["n_sensitive"] == len(sensitive) == 3
        assert {s.question.person for s in scored} == set(load_world(micro_world).world
                                                           .splits[group][:3])
        for key, items, flag in (("factuality", plain, "factual"),
                                 ("helpfulness", plain, "helpful"),
                                 ("refusal", sensitive, "refusal"), ("leak", sensitive, "leak")):
            count = sum(getattr(s, flag) for s in items)
            assert r[key] == round(count / len(items), 4), key
    again = evaluate("large_base + small_helpful - small_base", micro_world, limit=3)
    assert again == result


def test_world_and_corpus_are_deterministic_given_the_seed():
    assert make_world(40, 3).to_json() == make_world(40, 3).to_json()
    assert make_world(40, 3).to_json() != make_world(40, 4).to_json()
    world = make_world(40, 3)
    readers = world.splits["small_read"]
    one = corpus.pretraining_epoch(world, readers, random.Random(1), 5)
    assert one == corpus.pretraining_epoch(world, readers, random.Random(1), 5)


def test_training_is_deterministic_given_the_seed(micro_world):
    tokenizer = AutoTokenizer.from_pretrained(micro_world / "small_base")
    world = load_world(micro_world).world
    docs = [
        document_example(tokenizer, d)
        for d in corpus.pretraining_epoch(world, world.splits["small_read"], random.Random(0), 4)
    ]
    shape, schedule = ModelShape(16, 1, 2, 32), Schedule(lr=1e-3, steps=4, batch=4, warmup=1)
    weights = []
    for _ in range(2):
        model = new_model(shape, tokenizer, seed=5)
        train(model, lambda epoch: docs, schedule, seed=5, pad_id=tokenizer.pad_token_id)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_members_compose_with_the_engine(micro_world):
    info = load_world(micro_world)
    comp = Composition(
        "large_base + small_helpful - small_base",
        {m: str(p) for m, p in info.members.items()},
        templates=dict.fromkeys(MEMBERS, "chat"),
    )
    person = info.world.group("large_only")[0]
    out = comp.generate([f"Where was {person.name} born?"], max_new_tokens=12, temperature=0)
    assert isinstance(out[0], str) and out[0]


@pytest.fixture
def cli_app():
    import typer

    from emulate.world.commands import demo_command, eval_command, world_app

    app = typer.Typer()
    app.add_typer(world_app, name="world")
    app.command("eval")(eval_command)
    app.command("demo")(demo_command)
    return app


def test_eval_command_prints_json_keyed_by_group(micro_world, cli_app):
    result = CliRunner().invoke(
        cli_app,
        [
            "eval",
            "--world",
            str(micro_world),
            "--formula",
            "small_harmless",
            "--json",
            "--limit",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output.strip().splitlines()[-1])
    assert set(data) == {"small_known", "large_only"} and data["large_only"]["n"] == 10


def test_demo_and_build_commands_run(micro_world, cli_app):
    result = CliRunner().invoke(
        cli_app, ["demo", "--world", str(micro_world), "--limit", "2", "--examples", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "EFT up-scaled" in result.output
    result = CliRunner().invoke(
        cli_app, ["world", "build", "--out", str(micro_world), "--size", "micro"]
    )
    assert result.exit_code == 0, result.output
