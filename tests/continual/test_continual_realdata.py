"""Real photographs through `continual run --data`: class folders, webdataset shards and a saved
HF dataset read alike; a tiny open_clip model and a tiny HF one run a stream from the files to a
KA/ZS table; bad files fail with an error that names the fix."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
import torch
from continual_real_files import (
    SIZE,
    hf_model,
    open_clip_model,
    png,
    write_folders,
    write_hf_dataset,
    write_shards,
)
from typer.testing import CliRunner

from emulate.cli import app


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    return {
        "folders": write_folders(root / "folders"),
        "shards": write_shards(root / "shards"),
        "hf": write_hf_dataset(root / "hf"),
        "open_clip": open_clip_model(root / "oc"),
        "hf_clip": hf_model(root / "hf_clip"),
    }


def run(*args: str):
    return CliRunner().invoke(app, ["continual", "run", *args], env={"COLUMNS": "200"})


def test_the_three_layouts_read_the_same_images_labels_and_captions(files):
    from emulate.continual.datasources import read_source

    for part in ("stream", "eval"):
        a, b, c = (read_source(files[k] / part, SIZE) for k in ("folders", "shards", "hf"))
        assert len(a) == (24 if part == "stream" else 8)
        for other in (b, c):
            assert other.names == a.names
            assert np.array_equal(other.labels, a.labels)
            assert np.array_equal(other.images, a.images)
            assert other.captions == a.captions == [None] * len(a)


@pytest.mark.parametrize("model", ["open_clip", "hf_clip"])
def test_run_on_folders_and_on_shards_gives_the_same_metrics(files, model):
    results = []
    for layout in ("folders", "shards"):
        out = run(*out_args(files, layout, model), "--json")
        assert out.exit_code == 0, out.output
        results.append(json.loads(out.output.strip().splitlines()[-1]))
    a, b = results
    assert a["replay"] == "off" and a["model"] == files[model]
    assert sorted(c for task in a["stream"] for c in task) == ["one", "three", "two", "zero"]
    assert a["processes"] == 1 and a["steps_per_task"] == 2
    for key in ("start", "final", "average"):
        for metric, value in a[key].items():
            assert abs(value - b[key][metric]) <= 0.01, (key, metric)
    assert set(a["final_datasets"]) == {"stream", "eval"}


def out_args(files, layout: str, model: str) -> list[str]:
    return ["--data", str(files[layout]), "--model", files[model], "--tasks", "2", "--steps", "2"]


def test_a_table_from_the_files_says_where_replay_comes_from(files):
    out = run(*out_args(files, "folders", "hf_clip"), "--replay", str(files["shards"] / "eval"))
    assert out.exit_code == 0, out.output
    assert "final KA" in out.output and "final ZS" in out.output
    assert f"replay: {files['shards'] / 'eval'}" in out.output


def test_cached_batches_match_tokenizing_and_preprocessing_each_batch(files):
    """The prebuilt token ids and pixels against the tokenizer and open_clip's own transform."""
    import open_clip
    from PIL import Image

    from emulate.continual.clip import load_clip
    from emulate.continual.datasources import read_source
    from emulate.continual.realstream import TEMPLATES, Batches

    for key in ("hf_clip", "open_clip"):
        clip = load_clip(files[key])
        data = read_source(files["folders"] / "stream", clip.image_size)
        batches = Batches(clip, data, 0)
        rows = np.array([3, 0, 17, 9])
        batch = batches.take(rows, np.random.default_rng(5))
        rng = np.random.default_rng(5)
        texts = [
            TEMPLATES[int(rng.integers(len(TEMPLATES)))].format(name=data.names[data.labels[i]])
            for i in rows
        ]
        for name, value in clip.tokens(texts).items():
            assert torch.equal(batch[name], value), name
        assert torch.allclose(batch["pixel_values"], clip.pixels(data.images[rows]))
    transform = open_clip.image_transform(SIZE, is_train=False)
    reference = torch.stack([transform(Image.fromarray(im)) for im in data.images[rows]])
    assert torch.allclose(batch["pixel_values"], reference, atol=1e-5)


def test_open_clip_loads_by_config_and_checkpoint(files):
    from emulate.continual.clip import load_clip

    clip = load_clip(files["open_clip"])
    saved = torch.load(files["open_clip"].rsplit(":", 1)[1])
    assert torch.equal(clip.model.clip.logit_scale, saved["logit_scale"])
    tokens = clip.tokens(["a photo of a cat."])
    assert tokens["input_ids"].shape == (1, 16)
    out = clip.model(**tokens, pixel_values=torch.zeros(1, 3, SIZE, SIZE), return_loss=True)
    assert out.loss.ndim == 0


def _fails(out, *words: str) -> None:
    assert out.exit_code != 0
    text = " ".join(out.output.split())  # the error is wrapped to the terminal
    for word in words:
        assert word in text, out.output


def test_bad_files_fail_naming_the_fix(files, tmp_path):
    model = files["hf_clip"]
    empty = tmp_path / "empty"
    (empty / "stream" / "zero").mkdir(parents=True)
    (empty / "eval").mkdir()
    _fails(run("--data", str(empty), "--model", model), "holds no images")

    broken = write_folders(tmp_path / "broken")
    (broken / "stream" / "zero" / "999.png").write_bytes(b"not a png")
    _fails(run("--data", str(broken), "--model", model), "999.png", "not a readable image")

    shards = write_shards(tmp_path / "shards")
    with tarfile.open(shards / "stream" / "part-001.tar", "w") as tar:
        path = tmp_path / "lone.png"
        path.write_bytes(png(np.zeros((8, 8, 3), np.uint8)))
        tar.add(path, arcname="lone.png")
    _fails(run("--data", str(shards), "--model", model), "lone", "no caption (.txt) or class")

    captions = write_folders(tmp_path / "captions")
    for image in (captions / "stream").rglob("*.png"):
        image.with_name(image.name + ".txt").write_text("a blurry scan.")
    _fails(run("--data", str(captions), "--model", model), "names its image's class")

    _fails(run("--data", str(tmp_path / "nowhere"), "--model", model), "stream/")

    not_clip = tmp_path / "bert"
    not_clip.mkdir()
    (not_clip / "config.json").write_text(json.dumps({"model_type": "bert"}))
    _fails(run("--data", str(files["folders"]), "--model", str(not_clip)), "not a CLIP")

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    config = files["open_clip"].split(":")[1]
    _fails(
        run("--data", str(files["folders"]), "--model", f"open_clip:{config}:{junk}"),
        "not a checkpoint",
    )
    _fails(run("--data", str(files["folders"]), "--model", "open_clip:NoSuchNet"), "list_models")
    _fails(run("--data", str(files["folders"])), "--model")
