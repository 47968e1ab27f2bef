"""Builds, caches and loads the six-member model family of a world.

``build_world`` writes ``world.json`` (people and splits), the shared tokenizer, and six Hugging
Face checkpoints (``small_base``, ``large_base``, ``{small,large}_{helpful,harmless}``). A manifest
holds a hash of the arguments and of the code that produced them and every file's size and
sha256, so a second build with the same arguments returns at once, and a damaged or stale world is
rebuilt (or, on load, named). Building, locking and checking follow ``common.cache``.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from emulate.common.cache import CacheError, cached_build, verified_manifest, world_dir
from emulate.common.errors import EmulateError
from emulate.common.progress import TrainingBars
from emulate.common.workers import build_workers as build_workers
from emulate.common.workers import run_jobs
from emulate.world import corpus
from emulate.world.facts import VALUES, World, make_world
from emulate.world.tokenizer import train_tokenizer
from emulate.world.train import (
    ModelShape,
    Schedule,
    chat_example,
    document_example,
    new_model,
    train,
)

MEMBERS = (
    "small_base",
    "large_base",
    "small_helpful",
    "large_helpful",
    "small_harmless",
    "large_harmless",
)
# Small members first, so that a build in progress can already be looked at.
BUILD_ORDER = (
    "small_base",
    "small_helpful",
    "small_harmless",
    "large_base",
    "large_helpful",
    "large_harmless",
)
_CODE = ("facts.py", "corpus.py", "tokenizer.py", "train.py", "family.py")


@dataclass(frozen=True)
class WorldSize:
    n_people: int
    n_mentions: int  # mention-only documents per pre-training epoch
    small: ModelShape
    large: ModelShape
    small_pretrain: Schedule
    large_pretrain: Schedule
    finetune: Schedule
    replay: float  # pre-training documents mixed into fine-tuning, per chat example
    # Dialogues in pre-training: for this fraction of the people both bases read (the fine-tuning
    # people), and, in the large base's corpus only, for this fraction of its own people. Without
    # the second (0.4 -> 0.0, seed 0, measured with the earlier name-first answers) large-helpful
    # answered 0.82 instead of 0.92 of held-out questions.
    qa_fraction: float = 0.5
    large_qa_fraction: float = 0.4


SIZES: dict[str, WorldSize] = {
    "micro": WorldSize(
        n_people=48,
        n_mentions=16,
        small=ModelShape(48, 2, 4, 128),
        large=ModelShape(64, 2, 4, 192),
        small_pretrain=Schedule(lr=1e-2, steps=250, batch=16, warmup=20),
        large_pretrain=Schedule(lr=1e-2, steps=350, batch=16, warmup=20),
        finetune=Schedule(lr=3e-3, steps=60, batch=16, warmup=10),
        replay=0.5,
    ),
    "default": WorldSize(
        n_people=320,
        n_mentions=100,
        small=ModelShape(96, 3, 4, 256),
        large=ModelShape(128, 4, 4, 384),
        small_pretrain=Schedule(lr=5e-3, steps=1500, batch=32, warmup=50),
        large_pretrain=Schedule(lr=5e-3, steps=2500, batch=32, warmup=50),
        # Fine-tuning at 1/16 of pre-training's peak rate, below its final one. The chat data
        # only ever puts names the small base read before " is"; at 1e-3 the small chat model
        # drifted, after a name it never read, to end the sentence (P(" is") 0.52 in its base,
        # 0.20 fine-tuned, seed 0), and up-scaling inherited that: 0.75 / 0.88 factuality on
        # people only the large base read at seeds 0 / 1; at 3e-4: 0.40, and 0.97 / 0.97.
        finetune=Schedule(lr=3e-4, steps=150, batch=32, warmup=10),
        replay=0.5,
    ),
}


def default_world_dir(size: str = "default", seed: int = 0) -> Path:
    """``$EMULATE_HOME/worlds/<size>-seed<seed>``, else ``~/.cache/emulate/worlds/...``."""
    return world_dir("worlds", size, seed)


def build_key(size: str, seed: int, spec: WorldSize | None = None) -> str:
    """Hash of the arguments, the size's settings and the code that trains the family."""
    here = Path(__file__).parent
    h = hashlib.sha256()
    spec = spec or SIZES[size]
    h.update(
        json.dumps({"size": size, "seed": seed, "spec": asdict(spec)}, sort_keys=True).encode()
    )
    for name in _CODE:
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


class WorldError(EmulateError, ValueError):
    """A directory that holds no usable world, or an unknown size."""


@dataclass
class WorldInfo:
    """A built world: its facts and splits, and where each member's checkpoint lies."""

    dir: Path
    world: World
    manifest: dict

    @property
    def members(self) -> dict[str, Path]:
        return {m: self.dir / m for m in MEMBERS}


def load_world(out_dir: str | Path) -> WorldInfo:
    """The world in ``out_dir``, every file checked against its manifest and the current code."""
    out_dir = Path(out_dir)
    try:
        manifest = verified_manifest(out_dir, "world", _expected)
    except CacheError as exc:
        raise WorldError(str(exc)) from None
    return WorldInfo(out_dir, World.load(out_dir / "world.json"), manifest)


def _expected(manifest: dict) -> tuple[str, dict]:
    """The key and spec this code gives the manifest's size and seed (its own spec if unnamed)."""
    size, seed = manifest.get("size"), manifest.get("seed")
    if not isinstance(seed, int) or not isinstance(size, str):
        raise WorldError(f"the manifest names no size and seed (size {size!r}, seed {seed!r}); "
                         "rebuild it with `emulate world build`")
    if size in SIZES:
        spec = SIZES[size]
    else:
        try:
            spec = _spec_from(manifest["spec"])
        except (KeyError, TypeError) as exc:
            raise WorldError(f"the manifest's size {size!r} is none of {', '.join(SIZES)} and "
                             f"its spec is unreadable ({exc}); rebuild it: `emulate world build "
                             f"--size micro` or `--size default`") from None
    return build_key(size, seed, spec), asdict(spec)


def _spec_from(data: dict) -> WorldSize:
    shapes = {k: ModelShape(**data[k]) for k in ("small", "large")}
    schedules = {k: Schedule(**data[k]) for k in ("small_pretrain", "large_pretrain", "finetune")}
    rest = {k: v for k, v in data.items() if k not in shapes and k not in schedules}
    return WorldSize(**shapes, **schedules, **rest)


def build_world(
    out_dir: str | Path | None = None,
    size: str = "micro",
    seed: int = 0,
    progress: bool = True,
    spec: WorldSize | None = None,
    workers: int = 1,
) -> Path:
    """Build (or return the cached) world in ``out_dir``; returns the directory.

    ``workers=2`` trains the small and the large pair in two spawned processes, one thread
    each (the checkpoints are the same either way). Spawning re-imports the calling script, so
    a script that asks for it needs the usual ``if __name__ == "__main__":`` guard; the command
    line asks for it whenever the machine has two cores.
    """
    if size not in SIZES and spec is None:
        raise WorldError(f"unknown world size {size!r}; choose from {sorted(SIZES)}")
    spec = spec or SIZES[size]
    out_dir = Path(out_dir) if out_dir else default_world_dir(size, seed)

    def build(folder: Path) -> dict:
        return _build(folder, size, seed, spec, progress, workers)

    return cached_build(out_dir, "world", build_key(size, seed, spec), asdict(spec), build)


def _build(out_dir: Path, size: str, seed: int, spec: WorldSize, progress: bool,
           workers: int) -> dict:
    """Write the world, tokenizer and six members into ``out_dir``; the manifest's extras."""
    threads = torch.get_num_threads()
    # One thread: on a shared 2-core machine, two OpenMP threads per process run up to 10x
    # slower than one (measured), and a fixed count keeps the arithmetic reproducible.
    torch.set_num_threads(1)
    try:
        started = time.time()
        world = make_world(spec.n_people, seed, qa_fraction=spec.qa_fraction,
                           large_qa_fraction=spec.large_qa_fraction)
        world.save(out_dir / "world.json")
        bar = TrainingBars(progress)
        with bar:
            tokenizer = _tokenizer(world, spec, seed)
            tokenizer.save_pretrained(out_dir / "tokenizer")
            stats = _train_pairs(out_dir, spec, seed, bar, workers)
        return {
            "size": size,
            "seed": seed,
            "members": list(MEMBERS),
            "vocab_size": len(tokenizer),
            "stats": stats,
            "build_seconds": round(time.time() - started, 1),
        }
    finally:
        torch.set_num_threads(threads)


def _train_pairs(out_dir: Path, spec: WorldSize, seed: int, bar, workers: int) -> dict:
    """Train both pairs (base, then its two fine-tunes), in parallel processes if asked."""
    jobs = {pair: (_pair_job, (out_dir, pair, spec, seed)) for pair in ("small", "large")}
    stats = {}
    for pair_stats in run_jobs(jobs, bar.event, workers).values():
        stats.update(pair_stats)
    return {member: stats[member] for member in BUILD_ORDER}


def _pair_job(out_dir: Path, pair: str, spec: WorldSize, seed: int, report) -> dict:
    """``train_pair`` as a pool job (it takes ``report`` by keyword)."""
    return train_pair(out_dir, pair, spec, seed, report)


def train_pair(out_dir: Path, pair: str, spec: WorldSize, seed: int, report) -> dict:
    """Pre-train ``{pair}_base`` and fine-tune it into ``_helpful`` and ``_harmless``.

    Runs in a worker process (or in-process); reads the world and tokenizer the build wrote,
    reports ("add", member, steps) and ("step", member, step, loss) events, returns stats.
    """
    from transformers import PreTrainedTokenizerFast

    world = World.load(out_dir / "world.json")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(out_dir / "tokenizer")
    shape = spec.small if pair == "small" else spec.large
    readers = world.splits["small_read"] if pair == "small" else [p.name for p in world.people]
    stats = {}
    for kind in ("base", "helpful", "harmless"):
        member = f"{pair}_{kind}"
        pretrain_docs = _pretraining(world, readers, spec, tokenizer, seed, member)
        if kind == "base":
            schedule = spec.small_pretrain if pair == "small" else spec.large_pretrain
            model = new_model(shape, tokenizer, seed)
            data = pretrain_docs
        else:
            schedule = spec.finetune
            model = _load(out_dir / f"{pair}_base")
            data = _finetuning(world, kind, spec, tokenizer, pretrain_docs)
        t0 = time.time()
        report(("add", member, schedule.steps))
        loss = train(
            model,
            data,
            schedule,
            seed,
            tokenizer.pad_token_id,
            on_step=lambda s, loss, member=member: report(("step", member, s, loss)),
        )
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(out_dir / member)
        tokenizer.save_pretrained(out_dir / member)
        stats[member] = {
            "params": sum(p.numel() for p in model.parameters()),
            "final_loss": round(loss, 4),
            "seconds": round(time.time() - t0, 1),
        }
    return stats


def _tokenizer(world: World, spec: WorldSize, seed: int):
    rng = random.Random(f"tokenizer-{seed}")
    everyone = [p.name for p in world.people]
    texts = []
    for _ in range(2):
        texts += corpus.pretraining_epoch(world, everyone, rng, spec.n_mentions)
    for kind in ("helpful", "harmless"):
        texts += [corpus.chat_prompt(q) + " " + a for q, a in corpus.finetune_examples(world, kind)]
    words = everyone + [v for values in VALUES.values() for v in values]
    texts += [" ".join(words)] * 2  # values no small world uses still get their own token
    return train_tokenizer(texts, words)


def _pretraining(world, readers, spec, tokenizer, seed, member):
    """Epoch ``i`` -> freshly drawn documents (new paraphrases and orders every epoch)."""
    base = member.split("_")[0] + "_base"

    def epoch(i: int):
        rng = random.Random(f"pretrain-{seed}-{base}-{i}")
        docs = corpus.pretraining_epoch(world, readers, rng, spec.n_mentions)
        return [document_example(tokenizer, d) for d in docs]

    return epoch


def _finetuning(world, kind, spec, tokenizer, pretrain_docs):
    chats = [chat_example(tokenizer, q, a) for q, a in corpus.finetune_examples(world, kind)]

    def epoch(i: int):
        replay = pretrain_docs(10_000 + i)
        n = min(len(replay), round(spec.replay * len(chats)))
        return chats + replay[:n]

    return epoch


def _load(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path)
