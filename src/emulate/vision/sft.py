"""SFT of any image-text-to-text checkpoint on verified chains, through TRL's ``SFTTrainer``.

The chains are rendered the way the runtime will later talk to the trained model: in the
checkpoint's own chat template, its call format (the project's grammar, DeepEyes', Mini-o3's,
Qwen's boxes or OpenAI-style calls) with boxes in its family's convention, and with the tools'
system prompt wherever the runtime would send one. Chains whose calls the format cannot say
(DeepEyes only crops the original, for instance) are left out and counted.

The loss covers the assistant's own tokens: never an image, a tool's observation, the user's
question, or a turn the chain marks to skip (a recovery chain's wrong first call). Assistant
tokens come from the template's ``{% generation %}`` markers (TRL's collator) where the template
has them or TRL ships a training version of it; for any other template, from the lengths of the
conversation's prefixes, checked to be prefixes of the whole.

The Trainer owns the loop and the distribution, so the same command runs under
``accelerate launch`` on several GPUs. The folder it writes loads with ``AutoProcessor`` /
``AutoModelForImageTextToText``; ``emulate_vision.json`` beside the weights records the call
format and system prompt it was trained with, which ``Adapter.load`` reads.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from emulate.common.errors import EmulateError
from emulate.vision import formats
from emulate.vision.adapters import PIXEL_FAMILIES, Adapter
from emulate.vision.tools import CALL_RE, ToolError, parse_call

TRAINED_WITH = "emulate_vision.json"
MEMBERS = ("direct", "focus_area", "zoom_in", "reuse", "all")


class TrainError(EmulateError, ValueError):
    """Training data or options the trainer cannot use."""


@dataclass(frozen=True)
class SFTOptions:
    max_steps: int = 0  # 0: one epoch
    batch: int = 4
    lr: float = 1e-4
    seed: int = 0
    member: str = "all"
    call_format: str = "auto"
    bf16: bool = False
    log: bool = True  # the Trainer's progress bar and loss lines (a world build shows its own)
    warmup: int = 0  # steps of linear warm-up (a model trained from random weights needs some)

    def check(self) -> None:
        if isinstance(self.max_steps, bool) or not 0 <= self.max_steps <= 10_000_000:
            raise TrainError(
                f"--max-steps {self.max_steps} is out of range: give 0 (one epoch) or more"
            )
        if not 1 <= self.batch <= 4096:
            raise TrainError(f"--batch {self.batch} is out of range: give 1 to 4096")
        if not 0 < self.lr < 1:
            raise TrainError(f"--lr {self.lr} is out of range: give a rate in (0, 1)")
        if self.member not in MEMBERS:
            raise TrainError(f"unknown --member {self.member!r}; choose from {', '.join(MEMBERS)}")


def render(row: dict, adapter: Adapter) -> tuple[dict | None, str | None]:
    """One chain in the adapter's call format and convention: (example, None) or (None, why)."""
    call_format = adapter.call_format
    images = [image.convert("RGB") for image in row["images"]]
    family_pixels = adapter.family in PIXEL_FAMILIES
    messages = []
    if adapter.system is not None:
        messages.append({"role": "system", "content": [{"type": "text", "text": adapter.system}]})
    for message in row["messages"]:
        content = [dict(part) for part in message["content"]]
        if message["role"] == "assistant" and (call_format != "grammar" or family_pixels):
            text = content[0]["text"]
            match = CALL_RE.search(text)
            if match:
                try:
                    call = parse_call(match.group(1))
                except ToolError:
                    if call_format != "grammar":
                        return None, "a broken call written in the grammar"
                    call = None
                if call is not None:
                    source = images[call.arguments.get("source", 0)]
                    written = formats.write(call, call_format, adapter.seen_size(source),
                                            family_pixels)
                    if written is None:
                        return None, f"{call.name} cannot be written in {call_format}"
                    text = text[: match.start()] + written + text[match.end():]
            content[0]["text"] = text
        for part in content:
            if part["type"] == "image":
                part.pop("text", None)
        messages.append({"role": message["role"], "content": content})
    return {"messages": messages, "images": images, "skip_turns": list(row["skip_turns"])}, None


def training_template(processor) -> str | None:
    """A chat template with ``{% generation %}`` markers for this processor, or None."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = processor.chat_template
    if isinstance(template, str) and has_generation_markers(template):
        return template
    try:
        return get_training_chat_template(processor) or template
    except ValueError:
        return None


class ChainCollator:
    """Batches for the Trainer: labels on the assistant's tokens only, modality-aware."""

    def __init__(self, processor, template: str | None):
        from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

        self.processor, self.template = processor, template
        self.collate = DataCollatorForVisionLanguageModeling(
            processor=processor, assistant_only_loss=template is not None, chat_template=template
        )
        tokenizer = processor.tokenizer
        self.media = {
            tokenizer.convert_tokens_to_ids(getattr(processor, name))
            for name in ("image_token", "video_token")
            if isinstance(getattr(processor, name, None), str)
        }

    def __call__(self, examples: list[dict]) -> dict:
        skips = [set(e["skip_turns"]) for e in examples]
        spans = None if self.template else [self.prefix_spans(e) for e in examples]
        batch = self.collate([{"messages": e["messages"], "images": e["images"]} for e in examples])
        labels = batch["labels"]
        for row in range(labels.shape[0]):
            turns = spans[row] if spans is not None else label_runs(labels[row])
            keep = torch.zeros_like(labels[row], dtype=torch.bool)
            for turn, (start, end) in enumerate(turns):
                keep[start:end] = turn not in skips[row]
            labels[row][~keep] = -100
        for token in self.media:
            labels[batch["input_ids"] == token] = -100
        return batch

    def prefix_spans(self, example: dict) -> list[tuple[int, int]]:
        """Token spans of each assistant turn, from the lengths of the conversation's prefixes."""
        messages, images = example["messages"], example["images"]
        full = self.encode(messages, images, False)
        spans = []
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            start = len(self.encode(messages[:i], images, True))
            end = len(self.encode(messages[: i + 1], images, False))
            if full[:end] != self.encode(messages[: i + 1], images, False) or end <= start:
                raise TrainError(
                    "the chat template does not render a conversation's prefix as a prefix of "
                    "the whole, so the assistant's tokens cannot be found: add {% generation %}"
                    " ... {% endgeneration %} around the assistant's content in its template"
                )
            spans.append((start, end))
        return spans

    def encode(self, messages: list[dict], images: list, prompt: bool) -> list[int]:
        count = sum(p["type"] == "image" for m in messages for p in m["content"])
        filled, queue = [], iter(images[:count])
        for message in messages:
            parts = [{"type": "image", "image": next(queue)} if p["type"] == "image" else p
                     for p in message["content"]]
            filled.append({"role": message["role"], "content": parts})
        encoded = self.processor.apply_chat_template(
            filled, add_generation_prompt=prompt, tokenize=True, return_dict=True
        )
        ids = encoded["input_ids"]
        return list(ids[0] if ids and isinstance(ids[0], list) else ids)


def label_runs(labels: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) of each run of trained positions: one per assistant turn."""
    runs, start = [], None
    for j, value in enumerate(labels.tolist() + [-100]):
        if value != -100 and start is None:
            start = j
        elif value == -100 and start is not None:
            runs.append((start, j))
            start = None
    return runs


def prepare(chains_dir: str | Path, adapter: Adapter, options: SFTOptions):
    """The member's chains rendered for the adapter; (examples, dropped reasons)."""
    from emulate.vision.dataset import chains_world, load_chains, member_rows

    chains_dir = Path(chains_dir)
    if not (chains_dir / "dataset").is_dir():
        raise TrainError(
            f"{chains_dir} holds no chains (no dataset/ folder): give the folder "
            "`emulate vision synth` wrote"
        )
    dataset = load_chains(chains_dir)
    examples, kept, dropped = [], [], Counter()
    for index in member_rows(dataset, options.member, options.seed, chains_world(chains_dir)):
        row = dataset[index]
        example, why = render(row, adapter)
        if example is None:
            dropped[why] += 1
        else:
            examples.append(example)
            kept.append(row)
    calls = sum(row["recipe"] != "direct" for row in kept)
    if not examples or (dropped and not calls):
        raise TrainError(
            f"no tool chain of member {options.member} can be written in the {adapter.call_format} "
            f"format ({dict(dropped)}); choose --format grammar or another --member"
        )
    return examples, dropped


def train_checkpoint(model: str | Path, chains: str | Path, out: str | Path,
                     options: SFTOptions = SFTOptions(), progress=None) -> dict:
    """Fine-tune the checkpoint at ``model`` on the chains at ``chains``; save it at ``out``."""
    from datasets import Dataset

    options.check()
    adapter = Adapter.load(model, call_format=options.call_format)
    examples, dropped = prepare(chains, adapter, options)
    return fit(adapter, Dataset.from_list(examples), out, options, progress,
               {"model": str(model), "chains": str(chains), "dropped": dict(dropped)})


def fit(adapter: Adapter, examples, out: str | Path, options: SFTOptions,
        progress=None, provenance: dict | None = None) -> dict:
    """Train the adapter's model on rendered ``examples`` (any map-style dataset of
    ``render``'s output: generated on the fly for alignment) and save model and processor,
    with the report (and ``provenance``: where the model and data came from) beside them.
    ``progress(step, loss)`` hears every logged step (a world build's bars)."""
    from transformers import PrinterCallback, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    class Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if progress is not None and logs and "loss" in logs:
                progress(state.global_step, float(logs["loss"]))

    processor = adapter.processor
    template = training_template(processor)
    out = Path(out)
    with tempfile.TemporaryDirectory() as scratch:
        args = SFTConfig(
            output_dir=scratch,
            max_steps=options.max_steps or -1,
            num_train_epochs=1,
            per_device_train_batch_size=options.batch,
            learning_rate=options.lr,
            lr_scheduler_type="cosine",
            warmup_steps=options.warmup,
            logging_steps=10,
            save_strategy="no",
            report_to=[],
            seed=options.seed,
            data_seed=options.seed,
            remove_unused_columns=False,
            dataset_kwargs={"skip_prepare_dataset": True},
            max_length=None,
            bf16=options.bf16,
            use_cpu=not torch.cuda.is_available(),
            dataloader_num_workers=0,
            disable_tqdm=not options.log,
        )
        trainer = SFTTrainer(
            model=adapter.model,
            args=args,
            train_dataset=examples,
            data_collator=ChainCollator(processor, template),
            processing_class=processor,
            callbacks=[Progress()],
        )
        if not options.log:
            trainer.remove_callback(PrinterCallback)
        result = trainer.train()
        trainer.save_model(str(out))
    report = {
        "call_format": adapter.call_format,
        "system_prompt": adapter.system is not None,
        "examples": len(examples),
        "steps": result.global_step,
        "loss": result.training_loss,
        "masking": "generation markers" if template else "prefix lengths",
        "options": asdict(options),
        "processes": trainer.args.world_size,
        "main_process": trainer.is_world_process_zero(),
        **(provenance or {}),
    }
    if trainer.is_world_process_zero():
        processor.save_pretrained(str(out))
        (out / TRAINED_WITH).write_text(json.dumps(report, indent=1))
    return report
