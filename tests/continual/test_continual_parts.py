"""Schedules, mixtures, streams and the budget, each against its definition."""

from __future__ import annotations

import math

import pytest
import torch

from emulate.continual.budget import BudgetError, StepCost, measure_step, plan_steps
from emulate.continual.methods import make_strategy
from emulate.continual.methods.base import Strategy
from emulate.continual.mixture import Mixture, MixtureError
from emulate.continual.schedules import learning_rate, meta_peak
from emulate.continual.streams import StreamError, check_ordering, cut, order_concepts


def test_meta_schedule_peaks_halve_then_decay():
    peaks = [meta_peak(t, 100_000, 10_000, 1.0, 0.0) for t in range(4)]
    assert [round(p, 3) for p in peaks] == [1.0, 0.5, 0.25, 0.146]
    steps = 50
    lrs = [learning_rate("meta", 1, s, steps, 1.0) for s in range(steps)]
    assert max(lrs) == pytest.approx(meta_peak(1, steps, 5, 1.0, 0.0))


def test_restart_cosine_warms_up_then_decays_every_task():
    steps = 40
    for task in (0, 3):
        lrs = [learning_rate("restart", task, s, steps, 2.0, 0.1) for s in range(steps)]
        assert lrs[3] == pytest.approx(2.0) and lrs[0] == pytest.approx(0.5)
        assert lrs[-1] == pytest.approx(0.1)
        assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False))
    t = 7 * steps + 9
    assert learning_rate("rsqrt", 7, 9, steps, 1.0) == pytest.approx(math.sqrt(4 / (t + 1)))


def test_mixture_parsing_and_counts():
    assert Mixture.parse("0,1,0") == Mixture(0, 1, 0)
    for bad in ("0.5,0.5,0.5", "1,0", "a,b,c", "-1,1,1"):
        with pytest.raises(MixtureError, match="mix"):
            Mixture.parse(bad)
    m = Mixture.parse("0.3334,0.3333,0.3333")
    assert m.counts(64, True) == (21, 22, 21)
    assert m.counts(64, False) == (21, 43, 0)  # no buffer before the second task


def test_orderings(continual_data):
    world, data = continual_data
    u, clip = world.universe, world.clip()
    concepts = u.stream_concepts()
    for name in ("random", "frequency", "performance", "similarity", "dataset"):
        order = order_concepts(u, name, 0, clip, data.train)
        assert sorted(order) == sorted(concepts)
        assert order_concepts(u, name + "-reverse", 0, clip, data.train) == order[::-1]
    freq = [u.concepts[c].frequency for c in order_concepts(u, "frequency", 0, clip, data.train)]
    assert freq == sorted(freq)
    by_set = order_concepts(u, "dataset", 0, clip, data.train)
    assert [u.concepts[c].dataset for c in by_set[:4]] == [u.concepts[by_set[0]].dataset] * 4
    assert order_concepts(u, "random", 0, clip, data.train) != order_concepts(
        u, "random", 1, clip, data.train
    )
    with pytest.raises(StreamError, match="unknown ordering"):
        check_ordering("alphabetical")


def test_cut_into_tasks():
    chunks = cut(list("abcdefghij"), 3)
    assert [len(c) for c in chunks] == [3, 4, 3] and sum(chunks, []) == list("abcdefghij")
    with pytest.raises(StreamError, match="only 10 concepts"):
        cut(list("abcdefghij"), 11)


def test_plan_spends_the_same_budget():
    ref = StepCost(1000, 100)
    assert plan_steps(ref, 60, ref, 0, "finetune").steps == 60
    lora = plan_steps(ref, 60, StepCost(700, 80), 0, "lora")
    assert lora.steps == math.floor(60 * 1000 / (700 * 0.8))
    assert abs(lora.mafs_per_task - 60_000) <= 700 * 0.8
    ewc = plan_steps(ref, 60, StepCost(1000, 110), 4, "ewc")
    assert ewc.steps == math.floor((60_000 - 4 * 1100) / 1100)
    with pytest.raises(BudgetError, match="raise --steps"):
        plan_steps(ref, 2, StepCost(1000, 110), 4, "ewc")


def test_measured_costs(continual_data):
    world, data = continual_data
    clip = world.clip()
    batch = {
        **clip.tokens(["a photo of a red .", "a ."]),
        "pixel_values": clip.pixels(data.train["adapt-0"].images[:2]),
    }
    before = {k: v.clone() for k, v in clip.model.state_dict().items()}
    full = measure_step(clip.model, batch, Strategy())
    lora_strategy = make_strategy("lora")
    lora = measure_step(lora_strategy.prepare(clip.model), batch, lora_strategy)
    assert 0 < lora.flops < full.flops and lora.memory < full.memory
    after = {
        k.replace("base_model.model.", "").replace(".base_layer", ""): v
        for k, v in clip.model.state_dict().items()
        if "lora_" not in k
    }
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_every_caption_a_stream_draws_was_tokenized_before_the_first_step(continual_data):
    from emulate.continual.mixture import BatchSampler, Mixture, task_data
    from emulate.continual.stream import WorldBatches

    world, data = continual_data
    clip = world.clip()
    concepts = world.universe.stream_concepts()
    current, buffer = task_data(data.train, concepts[1:]), task_data(data.train, concepts[:1])
    sampler = BatchSampler(world.universe, data.pool, Mixture(), 32, 0, 0.0)
    prepared = WorldBatches(clip, world.universe)
    known = len(prepared.tokens.index)
    draw = prepared(current, buffer, 1, sampler=sampler)
    plain = WorldBatches(clip)(current, buffer, 1, sampler=sampler)
    for step in range(20):
        a, b = draw(step), plain(step)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert len(prepared.tokens.index) == known  # no caption was new
