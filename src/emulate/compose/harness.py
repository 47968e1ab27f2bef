"""A composition as an lm-evaluation-harness model (`--model emulate`).

    emulate lm-eval --model_args "formula=large + beta*(chat - small),model.large=PATH,\\
        model.chat=PATH,model.small=PATH,template.chat=chat,param.beta=1.0" --tasks ...

model_args keys: `formula`; `model.NAME=PATH` per model, or `model_dir=DIR` (every checkpoint
folder in DIR, named by its folder); `template=T` (every term) and `template.NAME=T`;
`param.NAME=NUMBER`; placement: `dtype`, lm-eval's `--device` (where terms are combined and
every model's default), and per model `device.NAME`, `dtype.NAME`, `device_map.NAME` (auto,
balanced, ...), `max_memory.NAME` (`0:40GiB;cpu:100GiB`: lm-eval splits its arguments at
commas), `offload_folder.NAME`; `batch_size`, `max_length`.

Log-likelihoods are the composed per-token log-probs summed over the continuation (scoring.py),
exact and batched; each term reads the context through its template. `loglikelihood_rolling`
scores raw text in windows of the models' context (templates do not apply to raw text);
`generate_until` decodes with the composition (greedy unless the task samples).
"""

from __future__ import annotations

from pathlib import Path

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from emulate.common.errors import ArgumentError
from emulate.compose import checks
from emulate.compose.composition import Composition
from emulate.compose.placement import parse_memory
from emulate.compose.scoring import score_continuations

PER_MODEL = ("model", "template", "param", "device", "dtype", "device_map", "max_memory",
             "offload_folder")
PLACEMENT = ("device", "dtype", "device_map", "max_memory", "offload_folder")
GLOBAL = ("formula", "model_dir", "template", "device", "dtype", "batch_size", "max_batch_size",
          "max_length", "lean")


def composition_from_args(args: dict) -> tuple[Composition, dict]:
    """A Composition from model_args (key -> value, as lm-eval parsed them), and the rest."""
    grouped: dict[str, dict[str, object]] = {k: {} for k in PER_MODEL}
    plain: dict[str, object] = {}
    for key, value in args.items():
        head, dot, name = str(key).partition(".")
        if dot and head in PER_MODEL:
            grouped[head][name] = value
        elif not dot:
            plain[key] = value
        else:
            checks.keywords({head: value}, PER_MODEL, "--model_args (per-model keys)")
    checks.keywords(plain, GLOBAL, "--model_args")
    models = dict(_model_dir(plain["model_dir"]) if plain.get("model_dir") else {})
    models.update({name: str(path) for name, path in grouped["model"].items()})
    formula = plain.get("formula")
    if not formula:
        raise ArgumentError("--model_args needs formula=... (e.g. formula=large + chat - small)",
                            "formula")
    template = plain.get("template")
    templates = {name: str(template) for name in models} if template else {}
    templates.update({name: str(t) for name, t in grouped["template"].items()})
    placements: dict[str, dict] = {}
    for field in PLACEMENT:
        for name, value in grouped[field].items():
            if field == "max_memory":
                value = parse_memory(value, f"max_memory.{name}")
            placements.setdefault(name, {})[field] = value
    composition = Composition(
        str(formula), models, templates, device=str(plain.get("device") or "cpu"),
        dtype=plain.get("dtype"), parameters=grouped["param"],
        lean=plain.get("lean", True), placements=placements,
    )
    return composition, plain


def _model_dir(directory) -> dict[str, str]:
    root = Path(str(directory)).expanduser()
    found = {p.name: str(p) for p in sorted(root.iterdir()) if (p / "config.json").exists()} \
        if root.is_dir() else {}
    if not found:
        raise ArgumentError(f"model_dir={directory}: no checkpoint folders (with config.json) "
                            "there", "model_dir")
    return found


@register_model("emulate")
class EmulateLM(LM):
    """lm-eval's model interface over a Composition."""

    def __init__(self, batch_size=16, max_batch_size=None, max_length=None, **args):
        super().__init__()
        self.composition, _ = composition_from_args(args)
        if batch_size in (None, "auto") or str(batch_size).startswith("auto"):
            batch_size = 16
        if isinstance(batch_size, str) and batch_size.isdigit():
            batch_size = int(batch_size)
        self.batch_size = checks.integer(batch_size, "batch_size", 1, ArgumentError)
        contexts = [self.composition.context_length(t) for t in self.composition.term_names]
        known = min((c for c in contexts if c), default=2048)
        self.max_length = (known if max_length is None
                           else checks.integer(max_length, "max_length", 2, ArgumentError))
        self.tokenizer = self.composition.tokenizer

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "emulate")).replace("/", "__")

    def _prefix_token(self) -> int:
        for token in (self.tokenizer.bos_token_id, self.tokenizer.eos_token_id):
            if token is not None:
                return int(token)
        raise ArgumentError("the tokenizer has neither BOS nor EOS to start a text with", "model")

    def _continuation_ids(self, context: str, continuation: str) -> tuple[str, list[int]]:
        """As lm-eval's HF model: trailing spaces of the context move to the continuation."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        return context, self.tokenizer(continuation, add_special_tokens=False)["input_ids"]

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        composition = self.composition
        contexts, continuations = [], []
        for request in requests:
            context, continuation = request.args[0], request.args[1]
            context, ids = self._continuation_ids(context, continuation)
            if not ids:
                raise ArgumentError(f"continuation {continuation!r} has no tokens",
                                    "continuation")
            contexts.append({t: composition.prompt_ids(t, context) or [self._prefix_token()]
                             for t in composition.term_names})
            continuations.append(ids)
        scored = score_continuations(composition, contexts, continuations, self.batch_size)
        return [(s.total, s.greedy) for s in scored]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows, owners = [], []
        for index, request in enumerate(requests):
            ids = self.tokenizer(request.args[0], add_special_tokens=False)["input_ids"]
            for window in get_rolling_token_windows(ids, self._prefix_token(), self.max_length,
                                                    context_len=1):
                windows.append(make_disjoint_window(window))
                owners.append(index)
        terms = self.composition.term_names
        scored = score_continuations(
            self.composition, [dict.fromkeys(terms, context) for context, _ in windows],
            [target for _, target in windows], self.batch_size)
        totals = [0.0] * len(requests)
        for owner, s in zip(owners, scored, strict=True):
            totals[owner] += s.total
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Requests with the same settings decode together, batch_size at a time."""
        batches: dict[str, list[int]] = {}
        settings = []
        for index, request in enumerate(requests):
            settings.append(self._generation_settings(request.args[1]))
            batches.setdefault(repr(sorted(settings[-1].items())), []).append(index)
        out = [""] * len(requests)
        for indices in batches.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                texts = self.composition.generate([requests[i].args[0] for i in chunk],
                                                  **settings[chunk[0]])
                for i, text in zip(chunk, texts, strict=True):
                    out[i] = text
        return out

    @staticmethod
    def _generation_settings(gen_kwargs) -> dict:
        """lm-eval's gen_kwargs (until, max_gen_toks, do_sample, temperature, ...) as ours."""
        options = dict(gen_kwargs or {})
        until = options.pop("until", None)
        sample = options.pop("do_sample", False)
        temperature = options.pop("temperature", 1.0 if sample else 0.0)
        settings = {"max_new_tokens": options.pop("max_gen_toks", 256),
                    "stop": [until] if isinstance(until, str) else list(until or []),
                    "temperature": temperature if sample or temperature else 0.0}
        for key in ("top_p", "top_k", "seed"):
            if key in options:
                settings[key] = options.pop(key)
        options.pop("max_length", None)
        checks.keywords(options, ("until", "max_gen_toks", "do_sample", "temperature", "top_p",
                                  "top_k", "seed"), "generate_until gen_kwargs")
        return settings
