"""Per-family adapters: any Hugging Face image-text-to-text model behind the runtime's loop.

One adapter serves Qwen2-VL, Qwen2.5-VL and Llava checkpoints (this project's own included)
through ``AutoProcessor`` / ``AutoModelForImageTextToText``: it renders the conversation with
the processor's own chat template (images inline, each through the family's processor, so a
Qwen model gets as many image tokens as the image's pixels call for, up to ``max_pixels``),
generates greedily until a call or an answer closes, and reads the reply in its call format
(``formats.py``). Box conventions: Qwen2.5-VL gives absolute pixels of the image as its
processor resized it; Qwen2-VL gives 0-1000 relative coordinates (its grounding format, as
its model card documents); Llava and this project's models give 0-1000.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

from emulate.common.errors import EmulateError
from emulate.vision import formats
from emulate.vision.runtime import ContextError
from emulate.vision.tools import Reply, ToolCall

STOPS = {
    "grammar": ["</tool_call>", "</answer>"],
    "deepeyes": ["</tool_call>", "</answer>"],
    "minio3": ["</grounding>", "</answer>"],
    "qwen_box": ["<|box_end|>", "</answer>"],
    "openai": ["</answer>"],
}
# Room for a whole turn: the longest chain reply (a repair's second call) is 52 tokens here; a
# reply cut short reads as a malformed call. Generation stops at the closing tag anyway.
MAX_NEW_TOKENS = 96
NEW_TOKENS_LIMIT = 4096
PIXEL_FAMILIES = ("qwen2_5_vl",)
QWEN_FAMILIES = ("qwen2_vl", "qwen2_5_vl")
AUTO_FORMAT = {"qwen2_5_vl": "deepeyes", "qwen2_vl": "qwen_box"}
# Qwen2-VL's own default cap (1280 image tokens of 28x28 pixels); raise it with max_pixels.
MAX_PIXELS = 1280 * 28 * 28
PIXELS_RANGE = (4 * 28 * 28, 16384 * 28 * 28)
KEPT_SPECIAL = ("<|box_start|>", "<|box_end|>", "<|object_ref_start|>", "<|object_ref_end|>")
GRAMMAR_MARK = "<|assistant|>"  # the project's own chat template, trained on the grammar
GRAMMAR_TOOL = "focus_area"  # the grammar's tool as one added token: a tokenizer built for it


class ModelLoadError(EmulateError, ValueError):
    """A path that holds no image-text-to-text checkpoint with its processor."""


class Adapter:
    """``adapter(messages, observations) -> reply``, for ``runtime.run``; ``adapter.parse``
    reads a reply in the checkpoint's call format."""

    def __init__(
        self,
        model,
        processor,
        max_new_tokens: int = MAX_NEW_TOKENS,
        call_format: str = "auto",
        max_pixels: int = MAX_PIXELS,
        system_prompt: bool | None = None,
    ):
        if isinstance(max_new_tokens, bool) or not 1 <= max_new_tokens <= NEW_TOKENS_LIMIT:
            raise ModelLoadError(
                f"max_new_tokens {max_new_tokens} is out of range: give 1 to {NEW_TOKENS_LIMIT}"
            )
        self.model = model.eval()
        self.processor = processor
        self.max_new_tokens = max_new_tokens
        self.family = getattr(model.config, "model_type", "")
        tokenizer = processor.tokenizer
        grammar_trained = (
            GRAMMAR_MARK in tokenizer.get_vocab() or GRAMMAR_TOOL in tokenizer.get_added_vocab()
        )
        if call_format == "auto":
            call_format = "grammar" if grammar_trained else AUTO_FORMAT.get(self.family, "grammar")
        self.call_format = formats.check_format(call_format)
        use_system = not grammar_trained if system_prompt is None else system_prompt
        self.system = formats.system_prompt(self.call_format) if use_system else None
        if self.family in QWEN_FAMILIES:
            self._cap_pixels(max_pixels)
        self.context = getattr(model.config.get_text_config(), "max_position_embeddings", None)
        self.stop = self._stopping(tokenizer, STOPS[self.call_format])
        self.skipped = {
            i
            for i, token in tokenizer.added_tokens_decoder.items()
            if token.special and token.content not in KEPT_SPECIAL
        }

    @classmethod
    def load(cls, path: str | Path, **kwargs) -> Adapter:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        path = Path(path)
        if path.is_file():
            raise ModelLoadError(f"{path} is a file; give the checkpoint's folder")
        if not (path / "config.json").exists():
            raise ModelLoadError(f"{path} holds no model (no config.json); give a checkpoint dir")
        try:
            processor = AutoProcessor.from_pretrained(path)
        except (OSError, ValueError, KeyError, ImportError, TypeError, AttributeError) as exc:
            raise ModelLoadError(f"{path} has no loadable processor: {exc}") from None
        if getattr(processor, "image_processor", None) is None:
            raise ModelLoadError(
                f"{path} has no image processor (preprocessor_config.json); save the "
                "checkpoint's processor with processor.save_pretrained into the folder"
            )
        try:
            model = AutoModelForImageTextToText.from_pretrained(path)
        except (OSError, ValueError, KeyError, ImportError, TypeError, AttributeError) as exc:
            raise ModelLoadError(
                f"{path} is not an image-text-to-text checkpoint "
                f"(AutoModelForImageTextToText cannot load it): {exc}"
            ) from None
        trained = path / "emulate_vision.json"  # written by `emulate vision train`
        if trained.exists():
            recorded = json.loads(trained.read_text())
            if kwargs.get("call_format", "auto") == "auto":
                kwargs["call_format"] = recorded.get("call_format", "auto")
            if kwargs.get("system_prompt") is None:
                kwargs["system_prompt"] = recorded.get("system_prompt")
        return cls(model, processor, **kwargs)

    def _cap_pixels(self, max_pixels: int) -> None:
        low, high = PIXELS_RANGE
        if isinstance(max_pixels, bool) or not low <= max_pixels <= high:
            raise ModelLoadError(f"max_pixels {max_pixels} is out of range: give {low} to {high}")
        size = dict(self.processor.image_processor.size)
        size["longest_edge"] = min(size["longest_edge"], max_pixels)
        size["shortest_edge"] = min(size["shortest_edge"], size["longest_edge"])
        self.processor.image_processor.size = size

    def inputs(self, messages: list[dict], images: list[Image.Image]):
        """The processor's encoding of the conversation, images placed where they occur."""
        queue = iter(images)
        filled = []
        if self.system is not None:
            filled.append({"role": "system", "content": [{"type": "text", "text": self.system}]})
        for message in messages:
            content = []
            for part in message["content"]:
                if part["type"] == "image":
                    part = {"type": "image", "image": next(queue)}
                content.append(part)
            filled.append({"role": message["role"], "content": content})
        return self.processor.apply_chat_template(
            filled,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
        )

    @torch.no_grad()
    def __call__(self, messages: list[dict], observations: list) -> str:
        encoded = self.inputs(messages, [o.image for o in observations])
        length = encoded["input_ids"].shape[1]
        if self.context is not None and length + self.max_new_tokens > self.context:
            raise ContextError(
                f"the conversation is {length} tokens and the reply may take "
                f"{self.max_new_tokens}, past the model's {self.context}-token context; "
                "ask a shorter question, give fewer calls or a smaller --max-new-tokens"
            )
        tokenizer = self.processor.tokenizer
        out = self.model.generate(
            **encoded,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            **self.stop,
        )
        new = [t for t in out[0, length:].tolist() if t not in self.skipped]
        return tokenizer.decode(new, skip_special_tokens=False)

    def parse(self, text: str) -> Reply:
        return formats.parse(text, self.call_format)

    @staticmethod
    def _stopping(tokenizer, stops: list[str]) -> dict:
        """Stop after a closing tag: as end tokens when each is one token, else as strings."""
        from transformers import StoppingCriteriaList, StopStringCriteria

        ids = [tokenizer.encode(s, add_special_tokens=False) for s in stops]
        if all(len(i) == 1 for i in ids):
            eos = tokenizer.eos_token_id
            return {"eos_token_id": [i[0] for i in ids] + ([eos] if eos is not None else [])}
        criteria = StopStringCriteria(tokenizer=tokenizer, stop_strings=stops)
        return {"stopping_criteria": StoppingCriteriaList([criteria])}

    def to_normalized(self, call: ToolCall, source: Image.Image, units: str = "family"):
        """The call in 0-1000 coordinates of ``source``: pixel units (and Qwen2.5-VL's own
        convention) are pixels of the image as the processor resizes it for the model."""
        if units != "pixels" and self.family not in PIXEL_FAMILIES:
            return call
        width, height = self.seen_size(source)
        return formats.pixels_to_normalized(call, width, height)

    def seen_size(self, image: Image.Image) -> tuple[int, int]:
        """(width, height) of the image as the model sees it."""
        if self.family not in QWEN_FAMILIES:
            return image.size
        height, width = self.resized_size(image)
        return width, height

    def resized_size(self, image: Image.Image) -> tuple[int, int]:
        """(height, width) of the image as a Qwen-VL processor feeds it to the model."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        ip = self.processor.image_processor
        factor = ip.patch_size * ip.merge_size
        size = ip.size
        low, high = size["shortest_edge"], size["longest_edge"]
        return smart_resize(image.height, image.width, factor, min_pixels=low, max_pixels=high)
