"""Steps per second of the continual loop against a bare PyTorch loop, in one run.

The loop is what a stream runs: ``loop.train_steps`` through a prepared Accelerator, on the
stream's own batches (``stream.WorldBatches``: the mixture's sampler, captions, cached token
ids, pixels), with the learning rate set every step and a strategy's hooks. The bare loop is the
same model, global batch and optimiser (``loop.new_optimizer``) stepping on batches built before
the clock starts: forward with the model's own loss, backward, clip, step. Rounds alternate
(loop, bare, loop, ...) so both see the same machine load; medians are printed.

    PYTHONPATH=src python bench/bench_continual_loop.py [--world W | --size micro] \
        [--rounds 7] [--steps 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch


def bare_steps(model, optimizer, batches: list[dict], steps: int) -> None:
    model.train()
    for step in range(steps):
        loss = model(**batches[step % len(batches)], return_loss=True).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", help="a built world (default: build --size into the cache)")
    parser.add_argument("--size", default="micro")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from emulate.continual.loop import new_accelerator, new_optimizer, train_steps
    from emulate.continual.methods.base import Strategy
    from emulate.continual.mixture import BatchSampler, Mixture, task_data
    from emulate.continual.pretrain import build_world, default_world_dir, load_world
    from emulate.continual.stream import Data, WorldBatches

    folder = args.world or build_world(default_world_dir(args.size, 0), args.size, 0)
    world = load_world(folder)
    data, clip = Data(world), world.clip()
    concepts = world.universe.stream_concepts()
    half = len(concepts) // 2
    current, buffer = task_data(data.train, concepts[half:]), task_data(data.train, concepts[:half])
    batch = world.size.stream_batch
    sampler = BatchSampler(world.universe, data.pool, Mixture(), batch, 0, 0.0)
    batches = WorldBatches(clip, world.universe)(current, buffer, 1, sampler=sampler)
    prebuilt = [batches(s) for s in range(args.steps)]

    accelerator = new_accelerator()
    loop_model = copy.deepcopy(clip.model)
    loop_model, loop_opt = accelerator.prepare(loop_model, new_optimizer(loop_model, 1e-4))
    bare_model = copy.deepcopy(clip.model)
    bare_opt = new_optimizer(bare_model, 1e-4)
    strategy = Strategy()

    def loop(round_: int) -> None:
        offset = round_ * args.steps  # fresh batches every round, as a stream draws them
        train_steps(
            accelerator,
            loop_model,
            loop_opt,
            lambda s: batches(offset + s),
            args.steps,
            lambda s: 1e-4,
            strategy,
        )

    def bare(round_: int) -> None:
        bare_steps(bare_model, bare_opt, prebuilt, args.steps)

    loop(0), bare(0)  # warm-up: allocator, first-call costs, the token cache's captions
    rates: dict[str, list[float]] = {"loop": [], "bare": []}
    for r in range(args.rounds):
        for name, run in (("loop", loop), ("bare", bare)):
            started = time.perf_counter()
            run(r + 1)
            rates[name].append(args.steps / (time.perf_counter() - started))
    loop_rate, bare_rate = (statistics.median(rates[k]) for k in ("loop", "bare"))
    print(
        f"world {folder} (batch {batch}, {args.threads} thread(s), {args.rounds} rounds x "
        f"{args.steps} steps)"
    )
    for name in ("loop", "bare"):
        print(
            f"{name}: median {statistics.median(rates[name]):.2f} steps/s; rounds "
            + ", ".join(f"{x:.2f}" for x in rates[name])
        )
    print(f"ratio loop / bare: {loop_rate / bare_rate:.3f}")


if __name__ == "__main__":
    main()
