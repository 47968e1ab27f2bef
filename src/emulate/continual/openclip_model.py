"""An open_clip model behind the interface the loop, the metrics and the budget use.

The loop calls ``model(input_ids=..., pixel_values=..., return_loss=True).loss`` and the metrics
``get_text_features`` / ``get_image_features``, as on transformers' ``CLIPModel``; this wrapper
gives an ``open_clip.create_model`` model those calls (CLIP's symmetric contrastive loss with
its learnable temperature), its tokenizer an HF-style call, and its preprocessing the mean, std
and rescale factor that ``Clip.pixels`` reads. The weights stay open_clip's own modules.
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from emulate.common.errors import EmulateError

PREFIX = "open_clip:"


class OpenClipError(EmulateError, ValueError):
    """An open_clip name, config or checkpoint that does not load (``clip.load_clip`` turns it
    into its ``ClipLoadError``; this module never imports ``clip``, so no import cycle)."""


@dataclass
class ClipOutput:
    loss: torch.Tensor | None
    logits_per_image: torch.Tensor
    logits_per_text: torch.Tensor
    image_embeds: torch.Tensor  # normalised, as CLIPModel's
    text_embeds: torch.Tensor


class OpenClipModel(torch.nn.Module):
    """``open_clip`` CLIP with ``CLIPModel``'s calls; ``config`` carries the two sizes read."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.clip = model
        size = model.visual.image_size
        size = size[0] if isinstance(size, tuple | list) else size
        self.config = SimpleNamespace(
            vision_config=SimpleNamespace(image_size=int(size)),
            text_config=SimpleNamespace(max_position_embeddings=int(model.context_length)),
        )

    @property
    def logit_scale(self) -> torch.nn.Parameter:
        return self.clip.logit_scale

    def get_text_features(self, input_ids, attention_mask=None, **_) -> torch.Tensor:
        return self.clip.encode_text(input_ids)

    def get_image_features(self, pixel_values, **_) -> torch.Tensor:
        return self.clip.encode_image(pixel_values)

    def forward(self, input_ids, pixel_values, attention_mask=None, return_loss=True, **_):
        image = torch.nn.functional.normalize(self.clip.encode_image(pixel_values), dim=-1)
        text = torch.nn.functional.normalize(self.clip.encode_text(input_ids), dim=-1)
        logits = self.clip.logit_scale.exp() * image @ text.T
        loss = None
        if return_loss:
            target = torch.arange(len(logits), device=logits.device)
            ce = torch.nn.functional.cross_entropy
            loss = (ce(logits, target) + ce(logits.T, target)) / 2
        return ClipOutput(loss, logits, logits.T, image, text)


class OpenClipTokenizer:
    """open_clip's tokenizer with the call ``Clip.tokens`` makes: fixed-context token ids (its
    text tower pools at the end-of-text token, the largest id, by argmax)."""

    def __init__(self, tokenizer, context: int):
        self.tokenizer, self.context = tokenizer, context

    def __call__(self, texts, **_) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokenizer(list(texts), context_length=self.context)}

    def __len__(self) -> int:
        return int(self.tokenizer.vocab_size)


def parse(spec: str) -> tuple[str, str | None]:
    """``open_clip:ARCH[:FILE]`` -> (ARCH, FILE or None)."""
    arch, _, file = spec[len(PREFIX) :].partition(":")
    return arch, file or None


def load_open_clip(spec: str) -> tuple[OpenClipModel, OpenClipTokenizer, SimpleNamespace]:
    """An open_clip model by architecture name or config JSON, with an optional checkpoint:
    (model, tokenizer, preprocessing numbers), the parts of a ``clip.Clip``."""
    import open_clip

    arch, file = parse(spec)
    if arch.endswith(".json"):
        if not Path(arch).is_file():
            raise OpenClipError(f"open_clip config {arch} does not exist; give a model config JSON")
        open_clip.add_model_config(arch)
        arch = Path(arch).stem
    if arch not in open_clip.list_models():
        raise OpenClipError(
            f"{arch!r} is no open_clip architecture; use a name from open_clip.list_models() "
            "or the path of a model config JSON (embed_dim, vision_cfg, text_cfg)"
        )
    if file and not Path(file).is_file():
        raise OpenClipError(f"checkpoint {file} does not exist; give a local open_clip file")
    try:
        model = open_clip.create_model(arch, pretrained=file, load_weights=file is not None)
    except (RuntimeError, ValueError, KeyError, OSError, struct.error, pickle.PickleError) as exc:
        raise OpenClipError(f"{file} is not a checkpoint of open_clip's {arch}: {exc}") from None
    wrapped = OpenClipModel(model).eval()
    cfg = model.visual.preprocess_cfg
    preprocess = SimpleNamespace(
        image_mean=list(cfg["mean"]), image_std=list(cfg["std"]), rescale_factor=1 / 255
    )
    tokenizer = OpenClipTokenizer(open_clip.get_tokenizer(arch), int(model.context_length))
    return wrapped, tokenizer, preprocess
