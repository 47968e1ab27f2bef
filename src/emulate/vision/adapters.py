"""Per-family adapters: any Hugging Face image-text-to-text model behind the runtime's loop.

The adapter renders the conversation with the processor's own chat template (images inline in
the messages), generates greedily until a call or an answer closes, and maps the family's box
convention to the grammar's 0-1000 coordinates: Qwen2-VL / Qwen2.5-VL give absolute pixels of the
image as their processor resized it; Llava-style models (this project's own) give 0-1000.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from emulate.common.errors import EmulateError
from emulate.vision.tools import SCALE, ToolCall

STOP_STRINGS = ["</tool_call>", "</answer>"]
# Room for a whole turn: the longest chain reply (a repair's second call) is 52 tokens here; a
# reply cut short reads as a malformed call. Generation stops at the closing tag anyway.
MAX_NEW_TOKENS = 96
PIXEL_FAMILIES = ("qwen2_vl", "qwen2_5_vl")


class ModelLoadError(EmulateError, ValueError):
    """A path that holds no image-text-to-text checkpoint with its processor."""


class Adapter:
    """``adapter(messages, observations) -> reply``, for ``runtime.run``."""

    def __init__(self, model, processor, max_new_tokens: int = MAX_NEW_TOKENS):
        self.model = model.eval()
        self.processor = processor
        self.max_new_tokens = max_new_tokens
        self.family = getattr(model.config, "model_type", "")
        self.stop = self._stopping(processor.tokenizer)

    @classmethod
    def load(cls, path: str | Path, **kwargs) -> Adapter:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        path = Path(path)
        if not (path / "config.json").exists():
            raise ModelLoadError(f"{path} holds no model (no config.json); give a checkpoint dir")
        try:
            processor = AutoProcessor.from_pretrained(path)
            model = AutoModelForImageTextToText.from_pretrained(path)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"{path} is not an image-text-to-text checkpoint: {exc}") from None
        return cls(model, processor, **kwargs)

    def inputs(self, messages: list[dict], images: list[Image.Image]):
        """The processor's encoding of the conversation, images placed where they occur."""
        queue = iter(images)
        filled = []
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
        tokenizer = self.processor.tokenizer
        out = self.model.generate(
            **encoded,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            **self.stop,
        )
        new = out[0, encoded["input_ids"].shape[1] :]
        return tokenizer.decode(new, skip_special_tokens=True)

    @staticmethod
    def _stopping(tokenizer) -> dict:
        """Stop after a closing tag: as end tokens when each is one token, else as strings."""
        from transformers import StoppingCriteriaList, StopStringCriteria

        ids = [tokenizer.encode(s, add_special_tokens=False) for s in STOP_STRINGS]
        if all(len(i) == 1 for i in ids):
            eos = tokenizer.eos_token_id
            return {"eos_token_id": [i[0] for i in ids] + ([eos] if eos is not None else [])}
        criteria = StopStringCriteria(tokenizer=tokenizer, stop_strings=STOP_STRINGS)
        return {"stopping_criteria": StoppingCriteriaList([criteria])}

    def to_normalized(self, call: ToolCall, source: Image.Image) -> ToolCall:
        """The call in 0-1000 coordinates of ``source`` (absolute pixels for Qwen-VL)."""
        if self.family not in PIXEL_FAMILIES:
            return call
        height, width = self.resized_size(source)
        arguments = dict(call.arguments)
        for key in ("box", "point"):
            values = arguments.get(key)
            if isinstance(values, list) and all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in values
            ):
                sides = [width, height] * (len(values) // 2)
                arguments[key] = [round(v * SCALE / s) for v, s in zip(values, sides, strict=True)]
        return ToolCall(call.name, arguments)

    def resized_size(self, image: Image.Image) -> tuple[int, int]:
        """(height, width) of the image as a Qwen-VL processor feeds it to the model."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        ip = self.processor.image_processor
        factor = ip.patch_size * ip.merge_size
        size = ip.size
        low, high = size["shortest_edge"], size["longest_edge"]
        return smart_resize(image.height, image.width, factor, min_pixels=low, max_pixels=high)
