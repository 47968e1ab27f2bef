"""A lean forward pass for Llama-architecture models, used for every decoding forward.

Decoding runs one short forward per model per token (per drafted token when speculating), and
for small models most of a library forward is per-call machinery (mask building, output capture,
attention dispatch, module hooks) rather than arithmetic. `LeanLlama` runs the same weights and
rotary embedding with the same KV cache and the same arithmetic (one fused call where torch has
one: RMSNorm, grouped-query attention), and nothing else. It is only used after
`LeanLlama.wrap` has checked on a probe that its logits match the model's own forward.
"""

from __future__ import annotations

import weakref
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from transformers import DynamicCache


class LeanLlama:
    """Callable like the model in `CachedBatch.extend`: input_ids, attention_mask, position_ids
    and a DynamicCache in; an object with .logits and .cache out."""

    def __init__(self, model):
        self.model = model
        config = model.config
        self.head_dim = getattr(config, "head_dim", None) or (
            config.hidden_size // config.num_attention_heads
        )
        self.repeats = config.num_attention_heads // config.num_key_value_heads
        self.scale = self.head_dim**-0.5
        self.eps = config.rms_norm_eps
        self.config = config
        self._table: tuple[torch.Tensor, torch.Tensor] | None = None  # rotary cos, sin
        # The parameters each layer uses, looked up once (module attribute lookups cost as much
        # as a small model's arithmetic); references, not copies.
        self.layers = [
            (
                layer.input_layernorm.weight,
                *_weights(layer.self_attn, "q_proj", "k_proj", "v_proj", "o_proj"),
                layer.post_attention_layernorm.weight,
                *_weights(layer.mlp, "gate_proj", "up_proj", "down_proj"),
            )
            for layer in model.model.layers
        ]

    @classmethod
    def wrap(cls, model):
        """A LeanLlama for `model`, or the model itself if it is not a plain Llama or the lean
        forward does not reproduce its logits (checked once per model)."""
        if model not in _checked:
            _checked[model] = cls._wrap(model)
        return _checked[model]

    @classmethod
    def _wrap(cls, model):
        config = model.config
        placed = set((getattr(model, "hf_device_map", None) or {}).values())
        if len(placed) > 1 or "disk" in placed:  # split or offloaded: the library's hooks run it
            return model
        if (getattr(config, "model_type", None) != "llama" or model.training
                or getattr(config, "pretraining_tp", 1) not in (None, 1)
                or getattr(config, "hidden_act", "silu") != "silu"):
            return model
        try:
            lean = cls(model)
            return lean if lean._matches() else model
        except (AttributeError, RuntimeError, TypeError, ValueError):
            return model

    def __getattr__(self, name):  # parameters(), config, ...: the wrapped model's
        if name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)

    @torch.inference_mode()
    def __call__(self, input_ids, attention_mask=None, position_ids=None, cache=None,
                 logits_to_keep: int = 0, **_):
        inner, (rows, length) = self.model.model, input_ids.shape
        past = cache.get_seq_length()
        x = F.embedding(input_ids, inner.embed_tokens.weight)
        cos, sin = self._rotary(x, position_ids, past + length)
        mask = None
        if attention_mask is not None or length > 1:
            seen = torch.arange(past + length, device=x.device)
            mask = seen[None, :] <= (past + torch.arange(length, device=x.device))[:, None]
            mask = mask[None, None]
            if attention_mask is not None:
                mask = mask & attention_mask.bool()[:, None, None, :]
        shape = (rows, length, -1, self.head_dim)
        for index, (norm1, q, k, v, o, norm2, gate, up, down) in enumerate(self.layers):
            h = self._norm(x, norm1)
            queries = F.linear(h, *q).view(shape).transpose(1, 2)
            keys = F.linear(h, *k).view(shape).transpose(1, 2)
            values = F.linear(h, *v).view(shape).transpose(1, 2)
            queries = queries * cos + _rotate_half(queries) * sin
            keys = keys * cos + _rotate_half(keys) * sin
            keys, values = cache.update(keys, values, index)
            out = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask,
                                                 scale=self.scale, enable_gqa=self.repeats > 1)
            x = x + F.linear(out.transpose(1, 2).reshape(rows, length, -1), *o)
            h = self._norm(x, norm2)
            x = x + F.linear(F.silu(F.linear(h, *gate)) * F.linear(h, *up), *down)
        x = x[:, -logits_to_keep:] if logits_to_keep else x
        logits = _linear(self._norm(x, inner.norm.weight), self.model.lm_head)
        return SimpleNamespace(logits=logits, cache=cache)

    def _rotary(self, x: torch.Tensor, positions: torch.Tensor, needed: int):
        """cos and sin at `positions` (all below `needed`, the cached length after this
        forward: known on the host, so no device sync), (rows, 1, length, head_dim): the
        model's rotary embedding, looked up in a table of its values (each position's values
        are computed on their own, so the table holds exactly what the module returns). Rotary
        embeddings that change with the sequence length (dynamic scaling) are called every
        time."""
        rotary = self.model.model.rotary_emb
        if getattr(rotary, "rope_type", "default") != "default":
            cos, sin = rotary(x, positions)
            return cos[:, None], sin[:, None]
        table = self._table
        if table is None or table[0].shape[0] < needed or table[0].dtype != x.dtype:
            length = max(needed, 2 * (0 if table is None else table[0].shape[0]), 256)
            cos, sin = rotary(x, torch.arange(length, device=x.device)[None])
            self._table = table = (cos[0], sin[0])
        return table[0][positions][:, None], table[1][positions][:, None]

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """LlamaRMSNorm: normalized in float32, scaled by the weight in the model's dtype."""
        if x.dtype == torch.float32:
            return F.rms_norm(x, weight.shape, weight, self.eps)
        h = F.rms_norm(x.to(torch.float32), weight.shape, None, self.eps)
        return weight * h.to(x.dtype)

    def _matches(self) -> bool:
        """Prefill two left-padded rows with the model, then step both ways and compare."""
        device = next(self.model.parameters()).device
        vocab = self.config.vocab_size
        ids = torch.tensor([[0, 0, 3, 4, 5], [6, 7, 8, 9, 10]], device=device) % vocab
        mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        step = torch.tensor([[11, 12], [13, 14]], device=device) % vocab
        step_positions = positions[:, -1:] + torch.tensor([[1, 2]], device=device)
        full_mask = torch.cat([mask, torch.ones_like(step)], dim=-1)
        logits = []
        with torch.inference_mode():
            for forward in (self.model, self):
                cache = DynamicCache(config=self.config)
                self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                           cache=cache, use_cache=True)
                out = forward(input_ids=step, attention_mask=full_mask,
                              position_ids=step_positions, cache=cache, use_cache=True)
                logits.append(out.logits.float())
        reference, lean = logits
        scale = reference.abs().max().clamp(min=1.0)
        return bool(((lean - reference).abs().max() / scale) < 1e-4)


_checked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _linear(x: torch.Tensor, module) -> torch.Tensor:
    return F.linear(x, module.weight, module.bias)


def _weights(parent, *names: str) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """(weight, bias) of each named linear of `parent`."""
    return [(getattr(parent, n).weight, getattr(parent, n).bias) for n in names]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
