"""What the objects world lets a model perceive: probes on the processor's own views.

For each seed, fine questions' targets from the train split teach a probe and held-out eval
scenes score it, on three views of the target's badge:

- ``full``: the scene as the default family's processor shrinks it (672 -> 224 px), a 24 px
  window around the badge; the world claims the code is unreadable here (chance 0.25);
- ``crop``: the canvas at native resolution, a 36 px window (what ``focus_area`` shows);
- ``zoom``: that window magnified 3x (about what ``zoom_in`` gives a small object).

and, as the floor above chance for what should be perceived, the target's colour and shape
from the full view. Probes: logistic regression on pixels (scikit-learn) and a small conv net
with a nonlinearity (it can square away the lines' random phase, which a linear probe cannot).

    PYTHONPATH=src python bench/bench_vision_probe.py --seeds 0,1 --train 1500 --eval 500
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from emulate.vision.objects import CODES, COLOURS, SHAPES, questions
from emulate.vision.qwen_family import new_processor, new_tokenizer


def window(pixels: np.ndarray, centre: tuple[float, float], side: int) -> np.ndarray:
    """A side x side window of an H x W x 3 array around ``centre`` (zero padded)."""
    padded = np.pad(pixels, ((side, side), (side, side), (0, 0)))
    x, y = round(centre[0]) + side - side // 2, round(centre[1]) + side - side // 2
    return padded[y : y + side, x : x + side]


def views(seed: int, split: str, n: int, processor) -> dict:
    ip = processor.image_processor
    out = {"full": [], "crop": [], "zoom": [], "object": [], "code": [], "colour": [],
           "shape": [], "size": []}
    for scene, question in questions(seed, split, n, "fine"):
        t = question.target
        image = scene.render()
        full = ip.resize(np.asarray(image).transpose(2, 0, 1), size=ip.size,
                         resample=ip.resample, factor=28).transpose(1, 2, 0)
        scale = full.shape[1] / image.width
        bx = ((t.badge[0] + t.badge[2]) / 2, (t.badge[1] + t.badge[3]) / 2)
        out["full"].append(window(full, (bx[0] * scale, bx[1] * scale), 24))
        crop = window(np.asarray(image), bx, 36)
        out["crop"].append(crop)
        zoomed = Image.fromarray(crop).resize((108, 108), Image.NEAREST)
        out["zoom"].append(np.asarray(zoomed))
        cx, cy = (t.x + t.side / 2) * scale, (t.y + t.side / 2) * scale
        out["object"].append(window(full, (cx, cy), 64))
        out["code"].append(CODES.index(t.code))
        out["colour"].append(list(COLOURS).index(t.colour))
        out["shape"].append(SHAPES.index(t.shape))
        out["size"].append(t.size)
    return {k: np.asarray(v) for k, v in out.items()}


def linear_probe(train_x, train_y, test_x, test_y) -> float:
    scaler = StandardScaler().fit(train_x.reshape(len(train_x), -1).astype(np.float32))
    fit = LogisticRegression(max_iter=300, C=0.1)
    fit.fit(scaler.transform(train_x.reshape(len(train_x), -1).astype(np.float32)), train_y)
    guess = fit.predict(scaler.transform(test_x.reshape(len(test_x), -1).astype(np.float32)))
    return float((guess == test_y).mean())


def conv_probe(train_x, train_y, test_x, test_y, classes: int, seed: int, epochs: int = 30):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, classes),
    )

    def tensor(x):
        return torch.tensor(x, dtype=torch.float32).permute(0, 3, 1, 2) / 255.0

    xs, ys = tensor(train_x), torch.tensor(train_y)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(epochs):
        order = torch.randperm(len(xs))
        for i in range(0, len(xs), 64):
            batch = order[i : i + 64]
            loss = torch.nn.functional.cross_entropy(net(xs[batch]), ys[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return float((net(tensor(test_x)).argmax(-1) == torch.tensor(test_y)).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--train", type=int, default=1500)
    parser.add_argument("--eval", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", module="sklearn")
    processor = new_processor(new_tokenizer())
    print("| seed | what | view | objects | chance | linear | conv |")
    print("|---:|---|---|---|---:|---:|---:|")
    for seed in [int(s) for s in args.seeds.split(",")]:
        started = time.time()
        train, test = views(seed, "train", args.train, processor), views(seed, "eval", args.eval,
                                                                         processor)
        rows = [("code", v, 4) for v in ("full", "crop", "zoom")]
        rows += [("colour", "object", len(COLOURS)), ("shape", "object", len(SHAPES))]
        for what, view, classes in rows:
            for size in ("small", "large", "all"):
                if what != "code" and size != "all":
                    continue
                a, b = ((d["size"] == size) if size != "all" else np.ones(len(d["size"]), bool)
                        for d in (train, test))
                lin = linear_probe(train[view][a], train[what][a], test[view][b], test[what][b])
                conv = conv_probe(train[view][a], train[what][a], test[view][b], test[what][b],
                                  classes, seed, args.epochs)
                print(f"| {seed} | {what} | {view} | {size} | {1 / classes:.3f} | {lin:.3f} | "
                      f"{conv:.3f} |", flush=True)
        print(f"seed {seed}: {time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
