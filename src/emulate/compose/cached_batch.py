"""Rows of token sequences decoded through one model with a KV cache.

Prompts of different lengths are left-padded; the attention mask hides the padding and explicit
position ids start every row at 0, so a row's logits do not depend on what it is batched with.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, DynamicLayer

from emulate.compose.placement import input_device


class CachedBatch:
    """One model's rows: the cache, the attention mask over cached positions, next positions."""

    def __init__(self, model, vocab_size: int, output_device=None):
        self.model = model
        self.vocab_size = vocab_size
        self.device = input_device(model)  # where input ids go (a device map moves them on)
        # Where logits go: a composition combines terms placed on different devices on one.
        self.output_device = torch.device(output_device) if output_device else self.device
        self.cache: DynamicCache | None = None
        self.attention_mask: torch.Tensor | None = None  # (rows, cached length), 1 = real token
        self.next_position: torch.Tensor | None = None  # (rows,)

    @property
    def rows(self) -> int:
        return 0 if self.attention_mask is None else self.attention_mask.shape[0]

    @torch.inference_mode()
    def prefill(self, sequences: list[list[int]], last: int | None = None) -> torch.Tensor:
        """Run whole prompts; return the logits after each one, shape (rows, vocab), or with
        `last`, at each row's last `last` positions, shape (rows, last, vocab)."""
        longest = max(len(s) for s in sequences)
        ids = torch.zeros(len(sequences), longest, dtype=torch.long)
        mask = torch.zeros(len(sequences), longest, dtype=torch.long)
        for row, sequence in enumerate(sequences):
            ids[row, longest - len(sequence):] = torch.tensor(sequence, dtype=torch.long)
            mask[row, longest - len(sequence):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        self.cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, cache=self.cache,
            use_cache=True, logits_to_keep=last or 1,
        )
        self.cache = out.cache
        self.attention_mask = mask
        self.next_position = positions[:, -1] + 1
        if last is None:
            return out.logits[:, -1, : self.vocab_size].to(self.output_device)
        return out.logits[:, -last:, : self.vocab_size].to(self.output_device)

    @torch.inference_mode()
    def extend(self, tokens: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Append `tokens` (rows, t) to every row; return logits at each new position (rows, t, V).

        `valid` (rows, t) marks which new tokens are real; invalid ones are cached but masked out
        and take no position, so rows can advance by different amounts in one forward.
        """
        tokens = tokens.to(self.device)
        if valid is None:
            valid = torch.ones_like(tokens, dtype=torch.long)
        valid = valid.to(self.device, torch.long)
        positions = self.next_position[:, None] + valid.cumsum(-1) - valid
        self.attention_mask = torch.cat([self.attention_mask, valid], dim=-1)
        # Without padding or holes the causal mask is implied: skip building it every step.
        mask = None if bool(self.attention_mask.all()) else self.attention_mask
        out = self.model(
            input_ids=tokens, attention_mask=mask, position_ids=positions, cache=self.cache,
            use_cache=True,
        )
        self.cache = out.cache
        self.next_position = self.next_position + valid.sum(-1)
        return out.logits[..., : self.vocab_size].to(self.output_device)

    def keep(self, rows: torch.Tensor) -> None:
        """Drop every row not in `rows` (finished or cancelled sequences stop costing compute)."""
        rows = rows.to(self.device)
        self.cache.batch_select_indices(rows)
        self.attention_mask = self.attention_mask[rows]
        self.next_position = self.next_position[rows]

    def merge(self, other: CachedBatch, order: torch.Tensor) -> None:
        """Take in `other`'s rows (continuous batching): rows become `cat(self, other)[order]`.

        The shorter past is left-padded with masked positions, so each row keeps its own
        positions and logits; columns no row uses any more are dropped. Plain dynamic caches
        only (a sliding-window layer keeps its own bookkeeping): ValueError otherwise.
        """
        layers = list(self.cache.layers) + list(other.cache.layers)
        if any(type(layer) is not DynamicLayer for layer in layers):
            raise ValueError("only caches of plain DynamicLayers can be merged")
        length = max(self.attention_mask.shape[1], other.attention_mask.shape[1])

        def padded(batch: CachedBatch, tensor: torch.Tensor, dim: int) -> torch.Tensor:
            missing = length - batch.attention_mask.shape[1]
            if not missing:
                return tensor
            shape = list(tensor.shape)
            shape[dim] = missing
            return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)

        order = order.to(self.device)
        mask = torch.cat([padded(self, self.attention_mask, 1),
                          padded(other, other.attention_mask, 1)])[order]
        first = int(mask.any(dim=0).to(torch.int8).argmax())  # leading columns all rows ignore
        data = [
            tuple(torch.cat([padded(self, a, 2), padded(other, b, 2)])[order][:, :, first:]
                  for a, b in ((mine.keys, theirs.keys), (mine.values, theirs.values)))
            for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True)
        ]
        self.cache = DynamicCache(ddp_cache_data=data)
        self.attention_mask = mask[:, first:]
        self.next_position = torch.cat([self.next_position, other.next_position])[order]

    def keep_first(self, fed: int, keep: torch.Tensor) -> None:
        """Of the tokens in the last `fed` cached columns, row r keeps its first keep[r]; the
        rest become holes (masked, giving back their positions; rejected speculative tokens).
        Trailing columns no row keeps are cropped."""
        if fed == 0:
            return
        keep = keep.to(self.attention_mask.device)
        mask = self.attention_mask
        tail = mask[:, -fed:]
        drop = tail.bool() & (tail.cumsum(-1) > keep[:, None])
        self.next_position = self.next_position - drop.sum(-1)
        self.attention_mask = torch.cat([mask[:, :-fed], tail.masked_fill(drop, 0)], dim=-1)
        self.rewind(self.trailing_holes(fed))

    def forget(self, counts: torch.Tensor) -> None:
        """Row r forgets its last counts[r] tokens (guesses read in vain by some rows only):
        they become masked holes and give back their positions."""
        real = self.attention_mask.bool()
        from_end = real.flip(-1).cumsum(-1).flip(-1)
        drop = real & (from_end <= counts.to(self.device)[:, None])
        self.attention_mask = self.attention_mask.masked_fill(drop, 0)
        self.next_position = self.next_position - drop.sum(-1)

    def compact(self, slack: float = 0.25) -> None:
        """Pack each row's tokens together once holes are more than `slack` of the columns:
        holes move to the left as padding and columns no row uses are dropped. Positions are
        already in the cached keys, so no logits change; attention just reads fewer columns.
        Plain dynamic caches only (others are left as they are)."""
        mask = self.attention_mask.bool()
        width = int(mask.sum(-1).max())
        if width >= (1 - slack) * mask.shape[1]:
            return
        if any(type(layer) is not DynamicLayer for layer in self.cache.layers):
            return
        order = torch.sort(mask.to(torch.int8), dim=-1, stable=True).indices[:, -width:]

        def packed(tensor: torch.Tensor) -> torch.Tensor:  # (rows, heads, columns, dim)
            index = order.to(tensor.device)[:, None, :, None]
            return tensor.gather(2, index.expand(-1, tensor.shape[1], -1, tensor.shape[3]))

        self.cache = DynamicCache(ddp_cache_data=[(packed(layer.keys), packed(layer.values))
                                                  for layer in self.cache.layers])
        self.attention_mask = self.attention_mask.gather(1, order)

    def trailing_holes(self, limit: int) -> int:
        """How many of the last `limit` columns no row uses."""
        used = self.attention_mask[:, -limit:].any(dim=0).nonzero() if limit else []
        return limit - (int(used.max()) + 1 if len(used) else 0)

    def rewind(self, n: int) -> None:
        """Forget the last `n` cached positions of every row (rejected speculative tokens)."""
        if n <= 0:
            return
        self.cache.crop(-n)
        dropped = self.attention_mask[:, -n:].sum(-1)
        self.attention_mask = self.attention_mask[:, :-n]
        self.next_position = self.next_position - dropped
