"""The universe and the small CLIP: determinism, frequencies, pixels, pooling, zero-shot."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from emulate.continual.clip import (
    build_tokenizer,
    load_clip,
    text_classifier,
    zero_shot_accuracy,
)
from emulate.continual.pretrain import SIZES, load_world
from emulate.continual.render import HUES
from emulate.continual.universe import (
    ZERO_SHOT_TEMPLATES,
    Universe,
    dataset_split,
    factor_space,
    make_universe,
    pretraining_pool,
    replay_sample,
    syllables,
)


def test_universe_is_seeded_and_survives_a_round_trip(tmp_path):
    a, b = make_universe(SIZES["micro"].universe, 3), make_universe(SIZES["micro"].universe, 3)
    a.save(tmp_path / "u.json")
    c = Universe.load(tmp_path / "u.json")
    assert a.concepts == b.concepts == c.concepts and a.datasets == c.datasets
    assert make_universe(SIZES["micro"].universe, 4).concepts != a.concepts
    x, y = dataset_split(a, "adapt-0", "train"), dataset_split(c, "adapt-0", "train")
    assert np.array_equal(x.images, y.images) and np.array_equal(x.labels, y.labels)
    assert not np.array_equal(x.images, dataset_split(a, "adapt-0", "test").images)


def test_a_universe_saved_before_the_replay_sample_replays_the_whole_pool(tmp_path):
    import json

    make_universe(SIZES["micro"].universe, 3).save(tmp_path / "u.json")
    data = json.loads((tmp_path / "u.json").read_text())
    del data["size"]["replay_images"], data["size"]["eval_tail"]
    (tmp_path / "old.json").write_text(json.dumps(data))
    old = Universe.load(tmp_path / "old.json")
    pool = pretraining_pool(old)
    assert replay_sample(old, pool) is pool


def test_frequencies_shape_the_pool():
    u = make_universe(SIZES["micro"].universe, 0)
    pool = pretraining_pool(u)
    seen = {pool.names[i] for i in set(pool.labels.tolist())}
    for d in u.evaluation:
        assert set(d.concepts) <= seen  # eval-only concepts are common
    absent = [c for c in u.stream_concepts() if u.concepts[c].frequency == 0]
    assert absent and not set(absent) & seen  # absent concepts never appear
    roles = {d.role for d in u.datasets.values()}
    assert roles == {"adapt", "eval"}
    names = [c for d in u.datasets.values() for c in d.concepts]
    assert len(names) == len(set(names))


def test_eval_frequencies_follow_a_long_tail_and_replay_is_a_fixed_sample(continual_data):
    size = SIZES["default"].universe
    u = make_universe(size, 0)
    weights = [u.concepts[c].frequency for d in u.evaluation for c in d.concepts]
    assert all(size.eval_tail <= w <= size.eval_weight for w in weights)
    assert max(weights) / min(weights) > 10  # from common to rare
    world, data = continual_data
    pool = pretraining_pool(world.universe)
    replay = replay_sample(world.universe, pool)
    assert len(replay) == world.universe.size.replay_images < len(pool)
    assert np.array_equal(replay.images, data.pool.images)  # what a stream replays
    again = replay_sample(world.universe, pool)
    assert np.array_equal(replay.labels, again.labels) and replay.names == pool.names
    rows = {pool.images[i].tobytes() for i in range(len(pool))}
    assert all(image.tobytes() in rows for image in replay.images)


def test_names_are_shared_syllables_as_a_real_tokenizer_splits_a_new_word():
    u = make_universe(SIZES["default"].universe, 0)
    tok = build_tokenizer(u.words(), syllables())
    assert tok.tokenize("a photo of a maroon dotted circle .") == [
        "a",
        "photo",
        "of",
        "a",
        "maroon",
        "dotted",
        "circle",
        ".",
    ]
    pieces = {}
    for name in u.concepts:
        parts = tok.tokenize(name)
        assert tok.unk_token not in parts and 2 <= len(parts) <= 4  # never a token of its own
        assert "".join(p.removeprefix("##") for p in parts) == name
        for p in parts:
            pieces.setdefault(p, set()).add(name)
    stream = set(u.stream_concepts())
    known = [c for c in u.concepts if c not in stream]  # what pretraining names
    parts = [p for name in stream for p in tok.tokenize(name)]
    shared = [p for p in parts if pieces[p] & set(known)]
    assert len(shared) >= 0.95 * len(parts)  # nearly every piece is one pretraining trains
    assert len(tok) < len(u.concepts)  # far fewer tokens than names
    assert tok.tokenize("qx") == [tok.unk_token]  # letters no name uses are unknown
    whole = dataclasses.replace(SIZES["default"].universe, whole_names=True)
    w = make_universe(whole, 0)
    tok = build_tokenizer(w.words(), syllables())
    assert all(tok.tokenize(name) == [name] for name in w.concepts)  # the first design


def test_datasets_are_blocks_of_fine_attributes():
    size = SIZES["default"].universe
    u = make_universe(size, 0)
    colours, patterns, shapes = factor_space(size)
    seen = set()
    for d in u.datasets.values():
        combos = {
            (u.concepts[c].colour, u.concepts[c].pattern, u.concepts[c].shape) for c in d.concepts
        }
        assert len(combos) == len(d.concepts) == size.concepts_per_dataset
        block = [sorted({c[i] for c in combos}) for i in range(3)]
        assert combos == set(itertools.product(*block))  # every combination of its factors
        hues = {colours.index(c) % HUES for c in block[0]}
        assert len(block[0]) == 2 * len(hues)  # each hue in its bright and its dark shade
        assert not combos & seen  # datasets are disjoint
        seen |= combos
    adapt = [{u.concepts[c].shape for c in d.concepts} for d in u.adapt]
    assert any(a & b for i, a in enumerate(adapt) for b in adapt[i + 1 :])  # shared looks
    pool_only = [c for c in u.concepts.values() if c.dataset == "pretrain"]
    assert len(pool_only) == size.pretrain_concepts


def test_lighting_scales_each_images_colours():
    import dataclasses as dc

    from emulate.continual.render import Style, render

    flat = Style("flat", 0, 0.0, (0.3, 0.3), 0.0)
    n = 64
    ids = np.zeros(n, int)
    plain = render(ids, ids, ids, [flat], ids, 32, np.random.default_rng(0))
    lit = render(ids, ids, ids, [dc.replace(flat, lighting=0.3)], ids, 32, np.random.default_rng(0))
    centre = (slice(None), 16, 16, 0)
    assert len(set(plain[centre].tolist())) == 1  # one red without lighting
    spread = lit[centre].astype(float)
    assert spread.std() > 10 and 220 * 0.7 - 1 <= spread.min() and spread.max() <= 255


def test_pixels_match_the_image_processor(continual_world):
    clip = load_clip(continual_world / "clip")
    images = dataset_split(load_world(continual_world).universe, "eval-0", "test").images[:4]
    slow = clip.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
    assert torch.allclose(clip.pixels(images), slow, atol=1e-5)


def test_text_pools_at_the_first_end_of_text(continual_world):
    clip = load_clip(continual_world / "clip")
    assert clip.tokenizer.eos_token_id == clip.model.config.text_config.eos_token_id != 2
    tokens = clip.tokens(["a photo of a red .", "a ."])
    out = clip.model.text_model(**tokens)
    eos = (tokens["input_ids"] == clip.tokenizer.eos_token_id).int().argmax(-1)
    expected = out.last_hidden_state[torch.arange(2), eos]
    assert torch.allclose(out.pooler_output, expected)


def test_zero_shot_uses_the_full_label_set(continual_world):
    clip = load_clip(continual_world / "clip")
    s = dataset_split(load_world(continual_world).universe, "eval-0", "test")
    classes = text_classifier(clip, s.names, ZERO_SHOT_TEMPLATES)
    assert classes.shape[0] == len(s.names)
    slow = []
    for image, label in zip(s.images, s.labels, strict=True):
        emb = clip.model.get_image_features(pixel_values=clip.pixels(image[None]))
        emb = torch.nn.functional.normalize(getattr(emb, "pooler_output", emb), dim=-1)
        slow.append(int((emb @ classes.T).argmax()) == label)
    fast = zero_shot_accuracy(clip, s.images, s.labels, s.names, ZERO_SHOT_TEMPLATES)
    assert abs(fast - float(np.mean(slow))) < 1e-9


def test_image_folders_read_like_the_universe(continual_world, tmp_path):
    from PIL import Image

    from emulate.continual.realdata import ImageFolderError, image_folder

    s = dataset_split(load_world(continual_world).universe, "eval-0", "test")
    for i, (image, label) in enumerate(zip(s.images, s.labels, strict=True)):
        folder = tmp_path / "set" / s.names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    read = image_folder(tmp_path / "set", 32)
    assert read.names == sorted(s.names) and len(read) == len(s)
    clip = load_clip(continual_world / "clip")
    ours = zero_shot_accuracy(clip, s.images, s.labels, s.names, ZERO_SHOT_TEMPLATES)
    theirs = zero_shot_accuracy(clip, read.images, read.labels, read.names, ZERO_SHOT_TEMPLATES)
    assert ours == theirs
    with pytest.raises(ImageFolderError, match="class folders"):
        image_folder(tmp_path / "nothing", 32)
