"""Builds, caches and loads a vision world: tokenizer, processor, aligned model, two members.

``build_world`` writes the verified chains (``chains/``), the aligned model (``aligned/``) and
the members ``direct`` and ``tools`` (each a normal checkpoint with its processor). A manifest
holds a key hashing the arguments and the code, and every file's size and sha256, so a second
build with the same arguments trains nothing and a damaged one is rebuilt (``common.cache``).
The members' SFT runs in two processes when two cores are there (``workers.py``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from emulate.common.cache import CacheError, build_key, cached_build, verified_manifest, world_dir
from emulate.common.errors import EmulateError
from emulate.common.progress import TrainingBars
from emulate.vision.model import VLMShape
from emulate.vision.workers import run_jobs

MEMBERS = ("direct", "tools")
_CODE = (
    "scenes.py", "tools.py", "runtime.py", "chains.py", "synthesis.py", "dataset.py",
    "model.py", "train.py", "build.py",
)
_OBJECTS_CODE = (
    "objects.py", "object_chains.py", "object_build.py", "qwen_family.py", "sft.py", "dataset.py",
    "tools.py", "runtime.py", "synthesis.py", "formats.py", "adapters.py", "build.py",
)
WORLDS = ("tiles", "objects")


class WorldError(EmulateError, ValueError):
    """A directory that holds no built vision world, or an unknown size."""


@dataclass(frozen=True)
class VisionSize:
    shape: VLMShape
    align_steps: int
    sft_steps: int
    batch: int
    lr: float
    questions: int  # questions synthesized into chains (half fine, half coarse)
    eval_questions: int  # held-out questions of each kind
    caption_steps: int = 0  # alignment's first stage: captions of crops only


SIZES = {
    "micro": VisionSize(VLMShape(32, 1, 64, 1), 40, 20, 8, 3e-3, 24, 8, caption_steps=10),
    "default": VisionSize(VLMShape(64, 2, 128, 2), 1200, 300, 32, 3e-3, 1600, 100,
                          caption_steps=200),
}


def default_dir(size: str = "default", seed: int = 0, world: str = "tiles") -> Path:
    return world_dir("vision" if world == "tiles" else f"vision-{world}", size, seed)


def code_files(world: str = "tiles") -> list[Path]:
    here = Path(__file__).parent
    return [here / name for name in (_CODE if world == "tiles" else _OBJECTS_CODE)]


def sizes(world: str) -> dict:
    """The sizes of a world: ``VisionSize`` for tiles, ``ObjectSize`` for objects."""
    if world == "tiles":
        return SIZES
    if world == "objects":
        from emulate.vision.object_build import SIZES as OBJECT_SIZES

        return OBJECT_SIZES
    raise WorldError(f"unknown world {world!r}; choose from {', '.join(WORLDS)}")


def size_of(manifest: dict):
    """The spec a loaded world's manifest names."""
    return sizes(manifest.get("world", "tiles"))[manifest["size"]]


def load_world(directory: str | Path) -> dict:
    """The manifest of a built world, every file checked; a clear error when it is not usable."""
    try:
        return verified_manifest(directory, "vision", _expected)
    except CacheError as exc:
        raise WorldError(str(exc)) from None


def _expected(manifest: dict) -> tuple[str, dict]:
    """The key and spec this code gives the manifest's size and seed."""
    size, seed, world = manifest.get("size"), manifest.get("seed"), manifest.get("world", "tiles")
    if world not in WORLDS or size not in sizes(world) or not isinstance(seed, int):
        raise WorldError(f"the manifest names size {size!r} and seed {seed!r}; this emulate knows "
                         f"the sizes {', '.join(SIZES)}: rebuild the world with `emulate vision "
                         f"build --size micro` or `--size default`")
    return _key(size, seed, world), asdict(sizes(world)[size])


def _key(size: str, seed: int, world: str = "tiles") -> str:
    arguments = {"size": size, "seed": seed, "spec": asdict(sizes(world)[size])}
    if world != "tiles":
        arguments["world"] = world
    return build_key(arguments, code_files(world))


def build_world(out: str | Path | None, size: str = "default", seed: int = 0,
                progress: bool = True, workers: int = 1, world: str = "tiles") -> Path:
    """Build (or return the cached) world in ``out``; returns the directory."""
    if size not in sizes(world):
        raise WorldError(f"unknown size {size!r}; choose from {', '.join(sizes(world))}")
    out = Path(out) if out else default_dir(size, seed, world)

    def build(folder: Path) -> dict:
        if world == "objects":
            from emulate.vision import object_build

            return object_build.build(folder, size, seed, progress)
        return _build(folder, size, seed, progress, workers)

    return cached_build(out, "vision", _key(size, seed, world), asdict(sizes(world)[size]), build)


def _build(out: Path, size: str, seed: int, progress: bool, workers: int) -> dict:
    """Write chains, the aligned model and the members into ``out``; the manifest's extras."""
    from emulate.vision.dataset import synthesize_dataset
    from emulate.vision.model import new_model
    from emulate.vision.train import AlignmentData, Schedule, train

    spec = SIZES[size]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        started = time.time()
        bars = TrainingBars(progress)
        timings = {}
        with bars:
            processor = _processor()
            bars.event(("add", "synthesis", spec.questions))
            stats = synthesize_dataset(
                seed, spec.questions, out / "chains",
                progress=lambda i, n: bars.event(("step", "synthesis", i, 0.0)),
            )
            timings["synthesis"] = round(time.time() - started, 1)
            model = new_model(spec.shape, processor.tokenizer, seed)
            if spec.caption_steps:
                captions = Schedule(spec.caption_steps, spec.batch, spec.lr)
                train(model, processor,
                      AlignmentData(seed, captions.steps * captions.batch, True),
                      captions, seed, bars.event, "captions")
            schedule = Schedule(spec.align_steps, spec.batch, spec.lr)
            align_loss = train(model, processor,
                               AlignmentData(seed, schedule.steps * schedule.batch),
                               schedule, seed, bars.event, "alignment")
            _save(model, processor, out / "aligned")
            timings["alignment"] = round(time.time() - started - timings["synthesis"], 1)
            t0 = time.time()
            losses = train_members(out, MEMBERS, spec, seed, bars.event, workers)
            timings["members"] = round(time.time() - t0, 1)
        return {
            "size": size, "seed": seed, "members": list(MEMBERS), "synthesis": stats,
            "alignment_loss": align_loss, "member_loss": losses, "seconds": timings,
            "build_seconds": round(time.time() - started, 1),
        }
    finally:
        torch.set_num_threads(threads)


def train_member(out: Path, member: str, size: str, seed: int, target: Path, report) -> float:
    """SFT of one member (``direct`` or a tool variant) from the aligned model."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from emulate.vision.dataset import load_chains, member_rows
    from emulate.vision.train import ChainData, Schedule, train

    spec = SIZES[size]
    chains = load_chains(out / "chains")
    variant = "all" if member == "tools" else member
    rows = [chains[i] for i in member_rows(chains, variant, seed)]
    processor = AutoProcessor.from_pretrained(out / "aligned")
    model = LlavaForConditionalGeneration.from_pretrained(out / "aligned")
    schedule = Schedule(spec.sft_steps, spec.batch, spec.lr / 2)
    loss = train(model, processor, ChainData(rows), schedule, seed, report, member)
    _save(model, processor, target)
    return loss


def train_members(out: Path, members, spec_or_size, seed: int, report, workers: int) -> dict:
    """Train members, two at a time in spawned processes when ``workers`` allows."""
    size = read_size(spec_or_size)
    jobs = {m: (train_member, (out, m, size, seed, out / m)) for m in members}
    return run_jobs(jobs, report, workers)


def read_size(spec_or_size) -> str:
    if isinstance(spec_or_size, str):
        return spec_or_size
    return next(name for name, spec in SIZES.items() if spec == spec_or_size)


def _processor():
    from emulate.vision import chains
    from emulate.vision.model import new_processor, train_tokenizer

    return new_processor(train_tokenizer(chains.corpus()))


def _save(model, processor, target: Path) -> None:
    model.save_pretrained(target)
    processor.save_pretrained(target)
    (target / "emulate.json").write_text(json.dumps({"kind": "vision-member"}))
