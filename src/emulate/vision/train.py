"""Training through the transformers Trainer: alignment on fresh scenes, then SFT on chains.

The same code runs on several GPUs under ``accelerate launch``: the Trainer owns the loop and
the distribution; this module only supplies data and a collator. Alignment examples are drawn
from a seeded generator per index (a fresh scene every example, nothing to memorise): captions
of crops alone first ("The red tile shows rows.", as LLaVA's first stage trains on captions),
then with grounding ("Find the tile in row 1, column 2." -> a chain's first turn, its call on
the cell's box) and colours by place. Captions and grounding speak the chains' own sentences,
so SFT starts from a model that already writes them and only learns when to look and answer.
SFT reads the verified chains; the loss covers the assistant's own tokens only.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass

import torch
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from emulate.vision import chains
from emulate.vision.model import assistant_labels
from emulate.vision.scenes import GRID, make_scene, scene_rng
from emulate.vision.tools import Observation, execute


@dataclass(frozen=True)
class Schedule:
    steps: int
    batch: int
    lr: float
    warmup: int = 20


def alignment_example(seed: int, index: int, captions_only: bool = False) -> dict:
    rng = scene_rng(seed, "align", index)
    scene = make_scene(rng)
    image = scene.render()
    task = 1.0 if captions_only else rng.random()
    if task < 0.3:
        tile = rng.choice(scene.tiles)
        prompt, reply = chains.grounding_prompt(tile), chains.grounding_reply(tile)
    elif task < 0.55:
        tile = rng.choice(scene.tiles)
        prompt, reply = chains.colour_prompt(tile), tile.colour
    else:
        row, col = rng.randrange(GRID), rng.randrange(GRID)
        if rng.random() < 0.8:
            tile = rng.choice(scene.tiles)
            row, col = tile.row, tile.col
        tool = rng.choice(("focus_area", "zoom_in"))
        original = Observation(image, (0.0, 0.0, float(image.width), float(image.height)))
        image = execute(chains.look_call(tool, row, col), [original]).image
        prompt, reply = chains.caption_prompt(), chains.caption_reply(scene.at(row, col))
    messages = [
        {"role": "user", "content": [{"type": "text", "text": prompt}, {"type": "image"}]},
        {"role": "assistant", "content": [{"type": "text", "text": reply}]},
    ]
    return {"messages": messages, "images": [image], "skip_turns": []}


class AlignmentData(torch.utils.data.Dataset):
    """Alignment examples; ``captions_only`` for the first stage, where every answer needs the
    image (with text-only tasks beside them from the start, a decoder can settle on ignoring
    the image tokens and never learn to read them)."""

    def __init__(self, seed: int, n: int, captions_only: bool = False):
        self.seed, self.n, self.captions_only = seed, n, captions_only

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        return alignment_example(self.seed, index, self.captions_only)


class ChainData(torch.utils.data.Dataset):
    """Rows of the synthesized dataset (``datasets`` rows with images decoded)."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        return {key: row[key] for key in ("messages", "images", "skip_turns")}


class ChatCollator:
    """Render each conversation with the chat template; labels on assistant tokens only."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, examples: list[dict]) -> dict:
        texts = [
            self.processor.apply_chat_template(e["messages"], tokenize=False) for e in examples
        ]
        images = [image.convert("RGB") for e in examples for image in e["images"]]
        batch = self.processor(text=texts, images=images, padding=True, return_tensors="pt")
        skip = [list(e["skip_turns"]) for e in examples]
        batch["labels"] = assistant_labels(batch["input_ids"], self.processor.tokenizer, skip)
        batch["labels"][batch["attention_mask"] == 0] = -100
        return dict(batch)


class _Report(TrainerCallback):
    def __init__(self, report, member: str):
        self.report, self.member, self.loss = report, member, float("nan")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.loss = logs["loss"]
        self.report(("step", self.member, state.global_step, self.loss))


def train(model, processor, data, schedule: Schedule, seed: int, report, member: str) -> float:
    """Train ``model`` in place; returns the last logged loss."""
    report(("add", member, schedule.steps))
    callback = _Report(report, member)
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            max_steps=schedule.steps,
            per_device_train_batch_size=schedule.batch,
            learning_rate=schedule.lr,
            warmup_steps=schedule.warmup,
            lr_scheduler_type="cosine",
            weight_decay=0.0,
            max_grad_norm=1.0,
            logging_steps=max(1, min(25, schedule.steps // 10)),
            save_strategy="no",
            report_to=[],
            disable_tqdm=True,
            seed=seed,
            data_seed=seed,
            remove_unused_columns=False,
            dataloader_num_workers=0,
            use_cpu=not torch.cuda.is_available(),
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=data,
            data_collator=ChatCollator(processor),
            callbacks=[callback],
        )
        trainer.remove_callback(PrinterCallback)  # our bars report; stdout stays clean
        trainer.train()
    model.eval()
    return callback.loss


def shuffled(rows: list, seed: int) -> list:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows
