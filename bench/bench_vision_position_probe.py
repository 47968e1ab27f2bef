"""Where the box comes from: what the LM's state holds when it starts writing a box.

Trains the objects world's family (shape ``small``, random weights) on grounding alone
(``bench_vision_grounding.py``'s task, ``--train-objects`` objects per scene), then reads the
last hidden state right after "[", where the box's first number is written, on held-out scenes
of one and of two objects, and fits a ridge regression from it to the target's x-centre and to
the mean x-centre of all the scene's objects (held-out R^2). A state that holds the mean far
better than the target's is an average over the objects: the box is written between them;
the control is the other object's x-centre, held about as well as the target's if so.

    PYTHONPATH=src python bench/bench_vision_position_probe.py --steps 1500 --train-objects 1
    PYTHONPATH=src python bench/bench_vision_position_probe.py --steps 3000 --train-objects 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from bench_vision_grounding import example, messages, train
from sklearn.linear_model import RidgeCV
from transformers import Qwen2_5_VLForConditionalGeneration

from emulate.vision.qwen_family import SHAPES, new_config, new_processor, new_tokenizer


def states(model, processor, objects: int, n: int):
    """(states (n, hidden), target x-centres, mean x-centres of all objects, x-centres of the
    first other object (the target's on one-object scenes)) of n scenes."""
    xs, target, mean, other = [], [], [], []
    for i in range(n):
        scene, thing, prompt, _ = example("eval", i, objects)
        text = processor.apply_chat_template(messages(prompt), tokenize=False,
                                             add_generation_prompt=True) + "["
        encoded = processor(text=[text], images=[scene.render()], return_tensors="pt")
        with torch.no_grad():
            out = model(**encoded, output_hidden_states=True)
        xs.append(out.hidden_states[-1][0, -1].numpy())
        target.append((thing.box[0] + thing.box[2]) / 2)
        mean.append(np.mean([(t.box[0] + t.box[2]) / 2 for t in scene.things]))
        second = next((t for t in scene.things if t is not thing), thing)
        other.append((second.box[0] + second.box[2]) / 2)
    return np.array(xs), np.array(target), np.array(mean), np.array(other)


def held_out_r2(x: np.ndarray, y: np.ndarray, fit: int) -> float:
    model = RidgeCV(alphas=np.logspace(-2, 3, 12)).fit(x[:fit], y[:fit])
    predicted, truth = model.predict(x[fit:]), y[fit:]
    return 1 - ((predicted - truth) ** 2).sum() / ((truth - truth.mean()) ** 2).sum()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--train-objects", type=int, default=1)
    parser.add_argument("--scenes", type=int, default=400, help="probed scenes (3/4 fit)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    processor = new_processor(new_tokenizer(["Find the small red triangle. [12, 40, 96, 130]"]))
    model = Qwen2_5_VLForConditionalGeneration(new_config(SHAPES["small"], processor.tokenizer))
    started = time.time()
    loss = train(model, processor, args.steps, args.train_objects)
    print(f"trained {args.steps} steps on {args.train_objects}-object scenes in "
          f"{time.time() - started:.0f} s (loss {loss:.3f})")
    model.eval()
    fit = args.scenes * 3 // 4
    for objects in (1, 2):
        x, target, mean, other = states(model, processor, objects, args.scenes)
        print(f"{objects}-object scenes: held-out R^2 of the target's x-centre "
              f"{held_out_r2(x, target, fit):.3f}, of the objects' mean x-centre "
              f"{held_out_r2(x, mean, fit):.3f}, of the other object's "
              f"{held_out_r2(x, other, fit):.3f}")


if __name__ == "__main__":
    main()
