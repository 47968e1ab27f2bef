"""EWC's per-sample Fisher against a slow loop, SI's path from the unclipped loss gradient,
the budget measured with the penalty present, and both methods under a real (1-process, gloo)
DistributedDataParallel wrapper, whose ``module.``-prefixed names the hooks must not see."""

from __future__ import annotations

import pytest
import torch

from emulate.continual.loop import new_optimizer, train_steps
from emulate.continual.methods import make_strategy
from emulate.continual.methods.regularizers import empirical_fisher, per_sample_losses


def _batch(world, data, n=6):
    clip = world.clip()
    s = data.train["adapt-0"]
    names = [s.names[i] for i in s.labels[:n]]
    captions = [f"a photo of a {name}." for name in names]
    return clip, {**clip.tokens(captions), "pixel_values": clip.pixels(s.images[:n])}


def test_per_sample_fisher_matches_a_loop_over_samples(continual_data):
    world, data = continual_data
    clip, batch = _batch(world, data)
    model = clip.model
    fast = empirical_fisher(model, batch, chunk=4)  # two chunks
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    slow = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(6):
        model.zero_grad(set_to_none=True)
        per_sample_losses(model, batch)[i].backward()
        for n, p in params.items():
            if p.grad is not None:
                slow[n] += p.grad**2
    model.zero_grad(set_to_none=True)
    assert per_sample_losses(model, batch).mean().item() == pytest.approx(
        model(**batch, return_loss=True).loss.item(), rel=1e-5
    )
    for n in params:
        assert torch.allclose(fast[n], slow[n], rtol=1e-4, atol=1e-10), n
    # the square of the batch-mean gradient (the old estimate) is a different thing
    model.zero_grad(set_to_none=True)
    per_sample_losses(model, batch).mean().backward()
    key = "visual_projection.weight"
    old = params[key].grad ** 2
    model.zero_grad(set_to_none=True)
    assert not torch.allclose(fast[key] / 6, old, rtol=0.1)


def test_ewc_is_not_renormalised_unless_asked(continual_data):
    world, data = continual_data
    clip, batch = _batch(world, data)
    plain, scaled = (make_strategy("ewc", fisher_samples=6) for _ in range(2))
    scaled.normalise = True
    plain.task_end(clip.model, 0, lambda i: batch)
    scaled.task_end(clip.model, 0, lambda i: batch)
    direct = empirical_fisher(clip.model, batch)
    key = "visual_projection.weight"
    assert torch.allclose(plain.fisher[key], direct[key] / 6, rtol=1e-4)
    mean = torch.cat([v.flatten() for v in plain.fisher.values()]).mean()
    assert torch.allclose(scaled.fisher[key], plain.fisher[key] / mean, rtol=1e-4)


class _Accelerator:
    """The calls the loop makes of an Accelerator, on one process."""

    device = torch.device("cpu")
    process_index, num_processes = 0, 1

    def unwrap_model(self, model):
        from accelerate.utils import extract_model_from_parallel

        return extract_model_from_parallel(model)

    def backward(self, loss):
        loss.backward()

    def clip_grad_norm_(self, params, norm):
        torch.nn.utils.clip_grad_norm_(params, norm)


def test_si_reads_the_loss_gradient_before_clipping(continual_data):
    world, data = continual_data
    clip, batch = _batch(world, data)
    model = clip.model
    si = make_strategy("si")
    si.task_begin(model, 0)
    si.omega = {n: torch.full_like(p, 50.0) for n, p in model.named_parameters()}
    si.anchor = {n: p.detach() + 1.0 for n, p in model.named_parameters()}  # a large penalty
    model.zero_grad(set_to_none=True)
    model(**batch, return_loss=True).loss.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    seen = {}
    si.after_update = lambda m: seen.update(si.grad)
    train_steps(
        _Accelerator(), model, new_optimizer(model, 0.0), lambda s: batch, 1, lambda s: 0.0, si
    )
    key = "visual_projection.weight"
    assert torch.allclose(seen[key], expected[key], rtol=1e-3, atol=1e-6)
    clipped = model.visual_projection.weight.grad  # loss + penalty, clipped to norm 1
    assert not torch.allclose(clipped, expected[key], rtol=0.1)


def test_the_budget_counts_the_penalty(continual_data):
    from emulate.continual.budget import measure_step

    world, data = continual_data
    clip, batch = _batch(world, data)
    ewc = make_strategy("ewc")
    bare = measure_step(clip.model, batch, ewc)
    during = measure_step(clip.model, batch, ewc.for_budget(clip.model))
    # the penalty's element-wise work adds no matmul FLOPs, but its saved tensors cost memory
    assert during.memory > bare.memory and during.flops >= bare.flops and ewc.fisher == {}


def test_ewc_and_si_under_distributed_data_parallel(continual_data, tmp_path):
    import torch.distributed as dist
    from accelerate import Accelerator

    world, data = continual_data
    clip, batch = _batch(world, data)
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1
    )
    try:
        unwrap = Accelerator(cpu=True).unwrap_model
        for name in ("ewc", "si"):
            model = world.clip().model
            wrapped = torch.nn.parallel.DistributedDataParallel(model)
            strategy = make_strategy(name)
            for task in range(2):
                strategy.task_begin(unwrap(wrapped), task)
                train_steps(
                    _Accelerator(),
                    wrapped,
                    new_optimizer(wrapped, 1e-3),
                    lambda s: batch,
                    2,
                    lambda s: 1e-3,
                    strategy,
                )
                strategy.task_end(unwrap(wrapped), task, lambda i: batch)
            assert strategy.penalty(unwrap(wrapped)) is not None
    finally:
        dist.destroy_process_group()


def test_ewc_sizes_its_fisher_to_the_micro_budget(continual_data):
    """At micro defaults EWC's Fisher pass (about a batch's backward per sample) is sized to a
    quarter of the per-task budget and charged; EWC still takes steps, within the budget."""
    from emulate.continual.stream import RunConfig, run_stream

    world, data = continual_data
    result = run_stream(world, RunConfig("ewc", tasks=2), data)
    budget = result["budget"]
    per_task = budget["reference_steps"] * budget["reference_flops_per_step"]
    assert result["steps_per_task"] >= 1 and result["options"]["fisher_samples"] >= 1
    assert 0 < budget["extra_mafs"] <= 0.5 * per_task
    assert result["mafs_per_task"] <= per_task * 1.0001
    fixed = run_stream(world, RunConfig("ewc", tasks=2, fisher_samples=2), data)
    assert fixed["options"]["fisher_samples"] == 2
