"""Can the Qwen2.5-VL family learn to write a box at all? Grounding alone, two M-RoPE settings.

Trains the objects world's family (shape ``small`` unless ``--shape``, from random weights) on
one task: "Find the red circle." on scenes holding one object (``--objects N``: N, the target
named by its looks among them) -> its box in the family's convention (absolute pixels of the
224x224 view), then scores held-out scenes by IoU >= 0.5 with the target, and with any object
of the scene: a box on a wrong object is a failure to bind the words to the object, no box on
any a failure to localise. ``--rope family`` uses the family's split
(``qwen_family.mrope_section``, theta 10); ``--rope qwen`` the split the family had before,
Qwen's proportions 2:3:3 with theta 10,000, whose width frequencies barely turn across the
image.

    PYTHONPATH=src python bench/bench_vision_grounding.py --rope family --steps 3000
    PYTHONPATH=src python bench/bench_vision_grounding.py --rope qwen --steps 1500
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import Qwen2_5_VLForConditionalGeneration

from emulate.vision.evaluate import box_iou
from emulate.vision.objects import CANVAS, describe, make_scene, scene_rng
from emulate.vision.qwen_family import SHAPES, new_config, new_processor, new_tokenizer

VIEW = 224 / CANVAS


def example(split: str, index: int, objects: int = 1):
    scene = make_scene(scene_rng(0, split, index), n_things=(objects, objects))
    thing = scene.things[0]
    box = [round(v * VIEW) for v in thing.box]
    return scene, thing, f"Find {describe(scene, thing)}.", "[{}, {}, {}, {}]".format(*box)


def messages(prompt: str, reply: str | None = None) -> list[dict]:
    out = [{"role": "user", "content": [{"type": "text", "text": prompt}, {"type": "image"}]}]
    if reply is not None:
        out.append({"role": "assistant", "content": [{"type": "text", "text": reply}]})
    return out


def batch(processor, indices, objects: int) -> dict:
    examples = [example("align", i, objects) for i in indices]
    texts = [processor.apply_chat_template(messages(p, r), tokenize=False)
             for _, _, p, r in examples]
    encoded = processor(text=texts, images=[s.render() for s, *_ in examples], padding=True,
                        return_tensors="pt")
    labels = torch.full_like(encoded["input_ids"], -100)
    start = processor.tokenizer.convert_tokens_to_ids("<|im_start|>")
    for row, ids in enumerate(encoded["input_ids"].tolist()):
        reply = max(j for j, v in enumerate(ids) if v == start) + 3  # after "assistant\n"
        labels[row, reply:] = encoded["input_ids"][row, reply:]
    labels[encoded["attention_mask"] == 0] = -100
    return {**encoded, "labels": labels}


def score(model, processor, n: int, objects: int) -> tuple[float, float]:
    """Shares of held-out scenes whose box has IoU >= 0.5 with the target, and with any object."""
    model.eval()
    hits = anywhere = 0
    for i in range(n):
        scene, thing, prompt, _ = example("eval", i, objects)
        text = processor.apply_chat_template(messages(prompt), tokenize=False,
                                             add_generation_prompt=True)
        encoded = processor(text=[text], images=[scene.render()], return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**encoded, max_new_tokens=16, do_sample=False)
        reply = processor.tokenizer.decode(out[0, encoded["input_ids"].shape[1]:],
                                           skip_special_tokens=True)
        try:
            box = [float(v) / VIEW for v in reply.strip().strip("[]").split(",")]
            if len(box) == 4:
                hits += box_iou(box, thing.box) >= 0.5
                anywhere += any(box_iou(box, t.box) >= 0.5 for t in scene.things)
        except ValueError:
            pass
    model.train()
    return hits / n, anywhere / n


def train(model, processor, steps: int, objects: int, lr: float = 1e-3, batch_size: int = 8,
          curriculum: int = 0, every: int = 0, on_every=None) -> float:
    """Grounding alone for `steps` AdamW steps (one-cycle schedule), the first `curriculum` on
    one object per scene; `on_every(step, loss)` every `every` steps and at the end. The last
    training loss."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps,
                                                   pct_start=0.05)
    for step in range(1, steps + 1):
        n = 1 if step <= curriculum else objects
        loss = model(**batch(processor, range(step * batch_size, (step + 1) * batch_size), n)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if on_every is not None and (step % every == 0 or step == steps):
            on_every(step, loss.item())
    return loss.item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rope", choices=("family", "qwen"), default="family")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--eval", type=int, default=60)
    parser.add_argument("--objects", type=int, default=1, help="objects per scene")
    parser.add_argument("--curriculum", type=int, default=0,
                        help="train the first this many steps on one object per scene")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small",
                        help="the family's size (qwen_family.SHAPES)")
    args = parser.parse_args()
    torch.manual_seed(0)
    processor = new_processor(new_tokenizer(["Find the small red triangle. [12, 40, 96, 130]"]))
    config = new_config(SHAPES[args.shape], processor.tokenizer)
    if args.rope == "qwen":
        config.text_config.rope_parameters.update(rope_theta=10000.0, mrope_section=[4, 6, 6])
    model = Qwen2_5_VLForConditionalGeneration(config)
    started = time.time()
    print(f"| rope | objects | step | train loss | IoU>=0.5 target (n={args.eval}) | any object "
          "| seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|")

    def report(step: int, loss: float) -> None:
        hit, anywhere = score(model, processor, args.eval, args.objects)
        print(f"| {args.rope} | {args.objects} | {step} | {loss:.3f} | {hit:.3f} | "
              f"{anywhere:.3f} | {time.time() - started:.0f} |", flush=True)

    train(model, processor, args.steps, args.objects, args.lr, args.batch, args.curriculum,
          args.every, report)

if __name__ == "__main__":
    main()
