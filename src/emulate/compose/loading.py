"""Loading models and tokenizers, and checking that all terms share one vocabulary.

Composing distributions token by token only makes sense if id i means the same token in every
model. Checkpoints often pad their embedding matrix beyond the tokenizer (32000 vs 32016 rows):
those padding rows are ignored, and the composition runs over the shared tokenizer range.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from safetensors import SafetensorError
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
)

from emulate.common.errors import ModelLoadError, PlacementError, VocabularyMismatchError
from emulate.compose import placement as place


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer; one instance is shared by every term that uses it."""

    name: str
    model: PreTrainedModel
    tokenizer: object

    @property
    def context_length(self) -> int | None:
        config = self.model.config
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    @cached_property
    def tokenizer_key(self) -> tuple:
        """Equal for tokenizers that render and tokenize every prompt alike (one vocabulary,
        pre- and post-processing, chat template and special tokens), so a prompt is rendered
        once for all the terms whose checkpoints ship copies of one tokenizer, as a model family
        does. A tokenizer without a serialized backend is only equal to itself."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            return ("object", id(self.tokenizer))
        text = json.dumps([type(self.tokenizer).__name__, backend.to_str(),
                           getattr(self.tokenizer, "chat_template", None),
                           repr(getattr(self.tokenizer, "special_tokens_map", None))])
        return ("content", hashlib.sha256(text.encode()).hexdigest())

    @property
    def eos_token_ids(self) -> set[int]:
        ids: set[int] = set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        generation_eos = getattr(self.model.generation_config, "eos_token_id", None)
        if isinstance(generation_eos, int):
            ids.add(generation_eos)
        elif generation_eos:
            ids.update(int(i) for i in generation_eos)
        return ids


def load_model(source, name: str, device: str = "cpu", dtype=None,
               placement=None) -> LoadedModel:
    """Load `source`: a checkpoint path or hub id, a (model, tokenizer) pair, or a LoadedModel.

    `placement` (see placement.py) says where the weights go; `device` and `dtype` are the
    defaults it falls back to. A checkpoint loads straight to its device or device map.
    """
    if isinstance(source, LoadedModel):
        return source
    where = place.placement(placement, name, device, dtype)
    if isinstance(source, tuple) and len(source) == 2:
        model, tokenizer = source
    elif isinstance(source, PreTrainedModel):
        model = source
        try:
            tokenizer = AutoTokenizer.from_pretrained(model.name_or_path)
        except (OSError, ValueError):
            raise ModelLoadError(
                f"model {name!r} was given without a tokenizer and none is saved at "
                f"{model.name_or_path!r}; pass a (model, tokenizer) pair"
            ) from None
    elif isinstance(source, (str, Path)):
        path = _checkpoint_path(source, name)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            if isinstance(where.device_map, Mapping):
                place.check_map_modules(_skeleton(path), where.device_map, name)
            kwargs = place.from_pretrained_kwargs(where)
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        except PlacementError:
            raise
        except (OSError, ValueError, RuntimeError, AssertionError, SafetensorError) as exc:
            raise ModelLoadError(
                f"cannot load model {name!r} from {path!r} ({place.describe_request(where)}): "
                f"{exc}. Give a directory with a Hugging Face causal-LM checkpoint (config.json, "
                "weights, tokenizer files) and a placement that fits."
            ) from None
        return LoadedModel(name=name, model=model.eval(), tokenizer=tokenizer)
    else:
        raise ModelLoadError(
            f"model {name!r} must be a checkpoint path, a model or a (model, tokenizer) pair, "
            f"got {type(source).__name__}"
        )
    if where.mapped:
        raise PlacementError(
            f"placement of {name!r}: a device map applies to a checkpoint loaded by path; pass "
            "its path, or place the model yourself (accelerate) and pass the placed model"
        )
    if getattr(model, "hf_device_map", None):  # placed by accelerate: used where it is
        if placement is not None:
            raise PlacementError(
                f"placement of {name!r}: the model was given already placed by accelerate "
                f"(device map over {place.describe(model)}) and is used where it is; drop its "
                "placement, or pass its checkpoint path to have it placed")
        return LoadedModel(name=name, model=model.eval(), tokenizer=tokenizer)
    if where.dtype is not None:
        model = model.to(place.torch_dtype(where.dtype))
    model = model.to(where.device)
    return LoadedModel(name=name, model=model.eval(), tokenizer=tokenizer)


def load_structure(source, name: str) -> LoadedModel:
    """A checkpoint's tokenizer, config and generation config with its modules on the meta
    device: no weights read, no memory taken. What a front end needs to render, tokenize and
    check requests (vocabulary, end tokens, context length) while another process decodes."""
    if not isinstance(source, (str, Path)):
        return load_model(source, name)
    path = _checkpoint_path(source, name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = _skeleton(path)
        try:
            model.generation_config = GenerationConfig.from_pretrained(path)
        except OSError:  # no generation_config.json: the one derived from config.json stands
            pass
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read model {name!r} from {path!r}: {exc}") from None
    return LoadedModel(name=name, model=model.eval(), tokenizer=tokenizer)


def _skeleton(path: str):
    """The model's modules on the meta device (no weights), to check an explicit map."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig

    with init_empty_weights():
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))


# A tokenizer's vocabulary lives in one of these; without any, transformers' fallback asks to
# install a converter, which is not the problem.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model", "sentencepiece.bpe.model", "tokenizer.tiktoken")


def _checkpoint_path(source, name: str) -> str:
    """A hub id as given, or a local folder expanded; a clear error for a folder that is not
    there (instead of a hub lookup that cannot succeed)."""
    path = str(source)
    if not _looks_local(path):
        return path
    folder = Path(path).expanduser()
    if not folder.exists():
        raise ModelLoadError(
            f"cannot load model {name!r}: no such directory {path!r}. Give a directory with "
            "a Hugging Face causal-LM checkpoint (config.json, weights, tokenizer files)."
        )
    if not folder.is_dir():
        raise ModelLoadError(
            f"cannot load model {name!r}: {path!r} is a file, not a checkpoint directory. Give "
            f"the directory that holds it ({str(folder.parent)!r}) if that is the checkpoint."
        )
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise ModelLoadError(
            f"cannot load model {name!r}: {path!r} has no tokenizer (none of "
            f"{', '.join(TOKENIZER_FILES)}). Save the tokenizer into it "
            "(tokenizer.save_pretrained), or pass a (model, tokenizer) pair."
        )
    return str(folder)


def _looks_local(path: str) -> bool:
    """A filesystem path rather than a hub id (`org/name`): fail fast instead of going online."""
    return path.startswith(("/", ".", "~")) or path.count("/") > 1 or Path(path).exists()


def shared_vocab_size(models: list[LoadedModel]) -> int:
    """The vocabulary all models agree on; raise naming the first differing ids otherwise.

    Ids beyond the shortest tokenizer (tokens added by a chat fine-tune) may appear in prompts
    but are never sampled. Embedding rows beyond a tokenizer's length are padding and ignored.
    """
    sizes = {m.name: len(m.tokenizer) for m in models}
    vocab = min(sizes.values())
    reference = models[0]
    reference_tokens = reference.tokenizer.convert_ids_to_tokens(list(range(vocab)))
    for other in models[1:]:
        if other.tokenizer is reference.tokenizer:
            continue
        tokens = other.tokenizer.convert_ids_to_tokens(list(range(vocab)))
        pairs = enumerate(zip(reference_tokens, tokens, strict=True))
        differing = [i for i, (a, b) in pairs if a != b]
        if differing:
            shown = ", ".join(
                f"{i}: {reference_tokens[i]!r} vs {tokens[i]!r}" for i in differing[:5]
            )
            raise VocabularyMismatchError(
                f"models {reference.name!r} and {other.name!r} do not share a vocabulary: "
                f"{len(differing)} of the first {vocab} ids differ (first: {shown}). "
                "Compose only models from one family with the same tokenizer."
            )
    for m in models:
        rows = m.model.get_output_embeddings().weight.shape[0]
        if rows < vocab:
            raise VocabularyMismatchError(
                f"model {m.name!r} predicts {rows} tokens but its tokenizer has {vocab}; "
                "the checkpoint and its tokenizer do not belong together"
            )
    return vocab


class EosOutsideVocabularyWarning(UserWarning):
    """An end-of-sequence id of some model lies past the vocabulary all models share."""


def shared_eos_ids(models: list[LoadedModel], vocab: int) -> set[int]:
    """The models' end-of-sequence ids that can end a composed completion (those below `vocab`).

    An id at or above `vocab` (an end-of-turn token a chat fine-tune added past the base's
    vocabulary) can never be sampled from the composed distribution: warn, naming it, since
    completions that should stop on it would run to their token budget.
    """
    kept = set()
    for m in models:
        for i in sorted(m.eos_token_ids):
            if i < vocab:
                kept.add(i)
                continue
            token = m.tokenizer.convert_ids_to_tokens(i)
            warnings.warn(
                f"end-of-sequence token {token!r} (id {i}) of model {m.name!r} lies past the "
                f"{vocab} token ids all models share, so it can never be sampled and will not end "
                "a completion. Give every model a tokenizer with this token (and resize its "
                "embeddings), use an end token all models share, or end completions with a stop "
                "string.", EosOutsideVocabularyWarning, stacklevel=3)
    return kept
