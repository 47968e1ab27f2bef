"""Real photographs and tiny random CLIPs on disk, for the real-data and multi-process tests.

Stream: scikit-learn's handwritten digits (four classes, upscaled); eval: scikit-image's sample
photographs (four classes, each also mirrored). Written as class folders, as webdataset shards
in the same order (sorted classes, sorted files), or as a saved HF dataset. Models: an open_clip
config JSON with tiny widths plus a checkpoint file, and an HF ``CLIPModel`` saved with an
offline WordPiece tokenizer and its image processor.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

SIZE = 32
DIGITS = ["zero", "one", "two", "three"]
PHOTOS = {"astronaut": "astronaut", "cat": "chelsea", "coffee": "coffee", "rocket": "rocket"}
PER_DIGIT = 6
TINY_OPEN_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": SIZE, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def photographs() -> dict[str, dict[str, list[np.ndarray]]]:
    """{"stream"|"eval": {class: [uint8 RGB images]}}, classes and files in sorted order."""
    from skimage import data
    from sklearn.datasets import load_digits

    digits = load_digits()
    stream = {}
    for label, name in enumerate(DIGITS):
        rows = np.flatnonzero(digits.target == label)[:PER_DIGIT]
        grey = [np.kron(digits.images[i] * (255 / 16), np.ones((4, 4))) for i in rows]
        stream[name] = [np.repeat(g[..., None], 3, -1).astype(np.uint8) for g in grey]
    evaluation = {}
    for name, sample in PHOTOS.items():
        image = getattr(data, sample)()
        image = np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image[..., :3]
        evaluation[name] = [image, image[:, ::-1].copy()]
    return {"stream": dict(sorted(stream.items())), "eval": dict(sorted(evaluation.items()))}


def png(image: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def write_folders(root: Path) -> Path:
    for part, classes in photographs().items():
        for name, images in classes.items():
            (root / part / name).mkdir(parents=True)
            for i, image in enumerate(images):
                (root / part / name / f"{i:03d}.png").write_bytes(png(image))
    return root


def write_shards(root: Path) -> Path:
    import webdataset as wds

    for part, classes in photographs().items():
        (root / part).mkdir(parents=True)
        with wds.TarWriter(str(root / part / "part-000.tar"), encoder=False) as sink:
            for name, images in classes.items():
                for i, image in enumerate(images):
                    key = f"{name}-{i:03d}"
                    sink.write({"__key__": key, "png": png(image), "cls": name.encode()})
    return root


def write_hf_dataset(root: Path) -> Path:
    import datasets
    from PIL import Image

    for part, classes in photographs().items():
        names = list(classes)
        features = datasets.Features(
            {"image": datasets.Image(), "label": datasets.ClassLabel(names=names)}
        )
        rows = {"image": [], "label": []}
        for label, images in enumerate(classes.values()):
            rows["image"] += [Image.fromarray(im) for im in images]
            rows["label"] += [label] * len(images)
        datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(root / part))
    return root


def open_clip_model(folder: Path) -> str:
    """``open_clip:CONFIG.json:CHECKPOINT`` of a tiny random model."""
    import open_clip
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "tiny-real-clip.json"
    config.write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(str(config))
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-real-clip")
    torch.save(model.state_dict(), folder / "tiny.pt")
    return f"open_clip:{config}:{folder / 'tiny.pt'}"


def hf_model(folder: Path) -> str:
    """An HF CLIP folder whose tokenizer knows the templates' words and the class names."""
    from emulate.continual.clip import ClipShape, build_tokenizer, new_clip, save_clip
    from emulate.continual.universe import ZERO_SHOT_TEMPLATES as TEMPLATES

    words = {w for t in TEMPLATES for w in t.replace("{name}", "").replace(".", " ").split()}
    words |= set(DIGITS) | set(PHOTOS) | {"."}
    tokenizer = build_tokenizer(sorted(words), list("abcdefghijklmnopqrstuvwxyz"))
    save_clip(new_clip(ClipShape(32, 1, 2, 8, 16), tokenizer, SIZE, 0), folder)
    return str(folder)


def run_each(out: Path, arg_lists: list[list[str]]) -> list[dict]:
    """``emulate ARGS --json`` in this process for every list; the results also go to
    ``out/rank<R>.json`` (one file per process under ``accelerate launch``: no interleaved
    output). ``python -m continual_real_files OUT ARGS_JSON`` runs it as a script."""
    import os

    from typer.testing import CliRunner

    from emulate.cli import app

    results = []
    for args in arg_lists:
        done = CliRunner().invoke(app, args)
        if done.exit_code:
            raise SystemExit(f"{args}: {done.output}{done.exception!r}")
        lines = [line for line in done.output.splitlines() if line.startswith("{")]
        results.append(json.loads(lines[-1]))  # warnings may follow on stderr
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(results))
    return results


if __name__ == "__main__":
    import sys

    run_each(Path(sys.argv[1]), json.loads(sys.argv[2]))
