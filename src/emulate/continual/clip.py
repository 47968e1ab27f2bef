"""A small CLIP: building one from a config, saving and loading it, and zero-shot classification.

The model is transformers' ``CLIPModel``, saved as a normal checkpoint with its tokenizer and
image processor, so ``load_clip`` reads a real CLIP checkpoint (``openai/clip-vit-base-patch32``
saved to disk) exactly as it reads the one trained here. HF CLIP pools the text at the first
end-of-text token: the sub-word tokenizer's ``eos_token_id`` is written into the text config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from emulate.common.errors import EmulateError
from emulate.continual.openclip_model import PREFIX, OpenClipError, load_open_clip

PAD, EOS, SOS, UNK = "[PAD]", "[EOS]", "[SOS]", "[UNK]"


class ClipLoadError(EmulateError, ValueError):
    """A path that does not hold a CLIP checkpoint with a tokenizer and an image processor."""


@dataclass(frozen=True)
class ClipShape:
    width: int
    layers: int
    heads: int
    patch: int
    projection: int
    context: int = 16


@dataclass
class Clip:
    """A CLIP model with the tokenizer and image processor that go with it."""

    model: torch.nn.Module
    tokenizer: object
    image_processor: object

    @property
    def image_size(self) -> int:
        return int(self.model.config.vision_config.image_size)

    def pixels(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) images at the model's size -> normalised pixel values, the same
        numbers the image processor gives (tested), without its per-image Python loop."""
        mean = torch.tensor(self.image_processor.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.image_processor.image_std).view(1, 3, 1, 1)
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
        x = x * float(self.image_processor.rescale_factor)
        return (x - mean) / std

    def tokens(self, texts: list[str]) -> dict[str, torch.Tensor]:
        context = int(self.model.config.text_config.max_position_embeddings)
        return self.tokenizer(
            texts, padding=True, truncation=True, max_length=context, return_tensors="pt"
        )


def build_tokenizer(words: list[str], pieces: list[str] = ()):
    """A WordPiece tokenizer: ``words`` whole, and any other word split greedily into
    ``pieces`` (a word's first piece as is, the rest ``##``-prefixed), with single letters as
    the fallback, as BERT's and CLIP's sub-word vocabularies split rare words."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    letters = sorted({ch for p in pieces for ch in p})
    subwords = set(pieces) | set(letters)
    tokens = sorted(set(words) | subwords) + sorted("##" + p for p in subwords)
    vocab = {w: i for i, w in enumerate([PAD, EOS, SOS, UNK] + tokens)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token=UNK, continuing_subword_prefix="##"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SOS} $A {EOS}", special_tokens=[(SOS, vocab[SOS]), (EOS, vocab[EOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, bos_token=SOS, unk_token=UNK
    )


def new_clip(shape: ClipShape, tokenizer, image_size: int, seed: int) -> Clip:
    """A randomly initialised CLIP whose text tower pools at the tokenizer's end-of-text."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    if tokenizer.eos_token_id == 2:
        raise ValueError("HF CLIP treats eos_token_id 2 as the legacy argmax pooling")
    common = dict(
        hidden_size=shape.width,
        intermediate_size=4 * shape.width,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
    )
    config = CLIPConfig(
        text_config=dict(
            common,
            vocab_size=len(tokenizer),
            max_position_embeddings=shape.context,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(common, image_size=image_size, patch_size=shape.patch),
        projection_dim=shape.projection,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config)
    processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return Clip(model, tokenizer, processor)


def save_clip(clip: Clip, path: Path) -> None:
    path = Path(path)
    clip.model.save_pretrained(path)
    clip.tokenizer.save_pretrained(path)
    clip.image_processor.save_pretrained(path)


def load_clip(path: str | Path) -> Clip:
    """A CLIP checkpoint directory (ours or a real one) with its tokenizer and processor, or
    ``open_clip:ARCH[:FILE]`` (an open_clip architecture or config JSON, and a checkpoint)."""
    import json

    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    if str(path).startswith(PREFIX):
        try:
            return Clip(*load_open_clip(str(path)))
        except OpenClipError as exc:
            raise ClipLoadError(str(exc)) from None
    path = Path(path)
    if not (path / "config.json").exists():
        raise ClipLoadError(
            f"{path} holds no CLIP checkpoint (no config.json); build a world with "
            "`emulate continual build`, save a CLIPModel there with save_pretrained, or name an "
            "open_clip model as open_clip:ARCH[:FILE]"
        )
    try:
        kind = json.loads((path / "config.json").read_text()).get("model_type")
    except (ValueError, AttributeError):
        kind = None
    if kind != "clip":
        raise ClipLoadError(
            f"{path} holds a {kind or 'unreadable'} checkpoint, not a CLIP (model_type 'clip'); "
            "give a CLIPModel folder or open_clip:ARCH[:FILE]"
        )
    try:
        model = CLIPModel.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        processor = AutoImageProcessor.from_pretrained(path)
    except (OSError, ValueError, KeyError) as exc:
        raise ClipLoadError(f"{path} is not a loadable CLIP checkpoint: {exc}") from None
    return Clip(model.eval(), tokenizer, processor)


def logit_scale(model: torch.nn.Module) -> torch.Tensor:
    """The learnable log-temperature of ``model``, through a data-parallel wrapper."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    return model.logit_scale


def clip_loss(model: torch.nn.Module, batch: dict, processes: int = 1) -> torch.Tensor:
    """CLIP's symmetric contrastive loss with its learnable temperature over the GLOBAL batch.

    Under data parallelism each process holds a slice; it gathers every slice's embeddings with
    their gradients (``torch.distributed.nn.all_gather``, as open_clip's ``gather_with_grad``),
    so every process computes the one-process loss and, once DDP averages the gradients, takes
    the one-process step (up to float summation order)."""
    device = next(model.parameters()).device
    out = model(**{k: v.to(device) for k, v in batch.items()}, return_loss=False)
    if processes == 1:  # the model's own logits: scale x normalised image @ text
        logits = out.logits_per_image
    else:
        from torch.distributed.nn import all_gather

        image = torch.cat(all_gather(out.image_embeds.contiguous()))
        text = torch.cat(all_gather(out.text_embeds.contiguous()))
        logits = logit_scale(model).exp() * image @ text.T
    target = torch.arange(len(logits), device=logits.device)
    ce = torch.nn.functional.cross_entropy
    return (ce(logits, target) + ce(logits.T, target)) / 2


class TokenCache:
    """Token ids of every caption seen, each tokenized once (padded to the full context, then a
    batch trimmed to its longest caption, as the tokenizer's ``padding=True`` pads it): a stream
    draws its captions from a few templates, so a step costs an index, not a tokenizer call."""

    def __init__(self, clip: Clip):
        self.clip = clip
        self.index: dict[str, int] = {}
        self.table: dict[str, torch.Tensor] = {}

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        new = [t for t in dict.fromkeys(texts) if t not in self.index]
        if new:  # padded here: the tokenizer's own max_length padding costs ~1 ms a call
            tokens = self.clip.tokens(new)
            context = int(self.clip.model.config.text_config.max_position_embeddings)
            pad = getattr(self.clip.tokenizer, "pad_token_id", None) or 0
            tokens = {
                k: torch.nn.functional.pad(
                    v, (0, context - v.shape[1]), value=pad if k == "input_ids" else 0
                )
                for k, v in tokens.items()
            }
            self.index.update({t: len(self.index) + i for i, t in enumerate(new)})
            self.table = {
                k: torch.cat([self.table[k], v]) if self.table else v for k, v in tokens.items()
            }
        rows = torch.tensor([self.index[t] for t in texts])
        batch = {k: v[rows] for k, v in self.table.items()}
        if "attention_mask" in batch:
            width = int(batch["attention_mask"].sum(1).max())
            batch = {k: v[:, :width] for k, v in batch.items()}
        return batch


@torch.no_grad()
def text_classifier(clip: Clip, names: list[str], templates: tuple[str, ...]) -> torch.Tensor:
    """One unit vector per class: the mean of its normalised prompt embeddings."""
    texts = [t.format(name=n) for n in names for t in templates]
    device = next(clip.model.parameters()).device
    emb = clip.model.get_text_features(**{k: v.to(device) for k, v in clip.tokens(texts).items()})
    emb = getattr(emb, "pooler_output", emb)
    emb = torch.nn.functional.normalize(emb, dim=-1).view(len(names), len(templates), -1)
    return torch.nn.functional.normalize(emb.mean(1), dim=-1)


@torch.no_grad()
def image_embeddings(clip: Clip, images: np.ndarray, batch: int = 512) -> torch.Tensor:
    parts = []
    device = next(clip.model.parameters()).device
    for i in range(0, len(images), batch):
        pixels = clip.pixels(images[i : i + batch]).to(device)
        emb = clip.model.get_image_features(pixel_values=pixels)
        emb = torch.nn.functional.normalize(getattr(emb, "pooler_output", emb), dim=-1)
        parts.append(emb.cpu())
    return torch.cat(parts)


@torch.no_grad()
def zero_shot_accuracy(
    clip: Clip, images: np.ndarray, labels: np.ndarray, names: list[str], templates
) -> float:
    """Top-1 accuracy of classifying ``images`` among ALL ``names`` by prompt similarity."""
    was_training = clip.model.training
    clip.model.eval()
    classes = text_classifier(clip, names, templates).cpu()
    predicted = (image_embeddings(clip, images) @ classes.T).argmax(-1).numpy()
    clip.model.train(was_training)
    return float((predicted == labels).mean())
