"""Real image-text data in the three layouts the field ships it in, read into one labelled set.

A source is class folders (``<class>/<file>``, a caption from ``<file>.txt`` beside the image
or from templates over the class name), webdataset shards (``*.tar`` of ``.png``/``.jpg`` with
``.cls``, the class name, and/or ``.txt``, a caption; with no ``.cls`` the caption is the
class), or a dataset saved with ``datasets.save_to_disk`` (an image column, and a ClassLabel
``label`` column and/or a ``text`` column). Images come at a CLIP's input size, uint8.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emulate.common.errors import EmulateError
from emulate.continual.realdata import SUFFIXES, square

IMAGE_KEYS = ("png", "jpg", "jpeg")


class DataSourceError(EmulateError, ValueError):
    """Data that is not one of the layouts read here, or holds an unreadable sample."""


@dataclass
class Labelled:
    """Images with each one's class index into ``names`` and its caption (None: templates)."""

    images: np.ndarray
    labels: np.ndarray
    names: list[str]
    captions: list[str | None]

    def __len__(self) -> int:
        return len(self.labels)


def _open(path_or_file, where: str, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path_or_file) as image:
            return square(image, size)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataSourceError(
            f"{where} is not a readable image ({exc}); remove or re-save it"
        ) from None


def _gather(rows: list[tuple[np.ndarray, str, str | None]], root: Path) -> Labelled:
    if not rows:
        raise DataSourceError(
            f"{root} holds no images; lay out {root}/<class>/<image>.png, *.tar shards of "
            ".png/.jpg with .cls or .txt, or a dataset saved with save_to_disk"
        )
    names = sorted({name for _, name, _ in rows})
    index = {n: i for i, n in enumerate(names)}
    return Labelled(
        np.stack([r[0] for r in rows]),
        np.array([index[r[1]] for r in rows]),
        names,
        [r[2] for r in rows],
    )


def _folder(root: Path, size: int) -> Labelled:
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in SUFFIXES:
                text = path.with_name(path.name + ".txt")
                caption = text.read_text().strip() if text.exists() else None
                rows.append((_open(path, str(path), size), folder.name, caption))
    return _gather(rows, root)


def _shards(root: Path, shards: list[Path], size: int) -> Labelled:
    import io

    import webdataset as wds

    rows = []
    urls = [str(s) for s in shards]
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        key = f"{sample['__url__']}:{sample['__key__']}"
        image = next((sample[k] for k in IMAGE_KEYS if k in sample), None)
        cls, txt = sample.get("cls"), sample.get("txt")
        if image is None:
            raise DataSourceError(f"shard sample {key} has no .png/.jpg image; add one or drop it")
        if cls is None and txt is None:
            raise DataSourceError(
                f"shard sample {key} has an image but no caption (.txt) or class (.cls); "
                "write one beside it in the shard"
            )
        caption = txt.decode().strip() if txt is not None else None
        name = cls.decode().strip() if cls is not None else caption
        rows.append((_open(io.BytesIO(image), key, size), name, caption))
    return _gather(rows, root)


def _hf_dataset(root: Path, size: int) -> Labelled:
    import datasets

    ds = datasets.load_from_disk(str(root))
    if isinstance(ds, datasets.DatasetDict):
        ds = datasets.concatenate_datasets(list(ds.values()))
    image_col = next((c for c, f in ds.features.items() if isinstance(f, datasets.Image)), None)
    label = ds.features.get("label")
    if image_col is None or not (isinstance(label, datasets.ClassLabel) or "text" in ds.features):
        raise DataSourceError(
            f"the dataset in {root} needs an Image column and a ClassLabel 'label' or a 'text' "
            f"column; it has {dict(ds.features)}"
        )
    rows = []
    for row in ds:
        caption = row.get("text")
        name = label.int2str(row["label"]) if isinstance(label, datasets.ClassLabel) else caption
        rows.append((square(row[image_col], size), name, caption))
    return _gather(rows, root)


def read_source(root: str | Path, image_size: int) -> Labelled:
    """Whatever layout ``root`` holds, as one labelled set (classes sorted, files sorted)."""
    root = Path(root)
    if not root.is_dir():
        raise DataSourceError(f"{root} is not a directory of images, shards or a saved dataset")
    if (root / "dataset_info.json").exists() or (root / "dataset_dict.json").exists():
        return _hf_dataset(root, image_size)
    shards = sorted(root.glob("*.tar"))
    if shards:
        return _shards(root, shards, image_size)
    return _folder(root, image_size)
