"""The family's shared tokenizer: byte-level BPE trained on the world's own texts.

Byte-level BPE keeps any text encodable and decodes exactly; training it to exhaustion on the
world's words makes every name and attribute value (with its leading space) a single token, which
tiny models need to memorize them. The chat template is plain text ("User: ...\nAssistant:") so
that a base model can read conversations in pre-training the way the web has them.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"
PAD = "<|pad|>"

CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n"
    "{% elif m['role'] == 'user' %}User: {{ m['content'] }}\n"
    "{% elif m['role'] == 'assistant' %}Assistant: {{ m['content'] }}{{ eos_token }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def train_tokenizer(
    texts: Iterable[str], words: Iterable[str], vocab_cap: int = 8192
) -> PreTrainedTokenizerFast:
    """Train on ``texts`` and check that every word in ``words`` is one token after a space."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_cap,
        min_frequency=2,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=PAD, padding_side="left"
    )
    wrapped.chat_template = CHAT_TEMPLATE
    multi = [w for w in words if len(wrapped.encode(" " + w, add_special_tokens=False)) != 1]
    if multi:
        raise RuntimeError(f"{len(multi)} world words are not single tokens, e.g. {multi[:5]}")
    return wrapped


def single_token_id(tokenizer, word: str) -> int:
    """The id of `` word`` (with its leading space)."""
    ids = tokenizer.encode(" " + word, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"{word!r} is not a single token")
    return ids[0]
