"""`Composition`: a linear formula over models' next-token log-probs, as a sampler.

    Composition("large + 1.0*(chat_small - small)",
                models={"large": "llama-2-70b", "chat_small": "llama-2-7b-chat",
                        "small": "llama-2-7b"},
                templates={"chat_small": "chat"})

Each term is a model seen through its own prompt template. Terms that name the same checkpoint
share one loaded model and run in one batched forward.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

import torch

from emulate.common.errors import (
    ArgumentError,
    FormulaError,
    GenerationParamsError,
    PlacementError,
    TemplateError,
)
from emulate.compose import checks
from emulate.compose import placement as place
from emulate.compose.decoding import Completion, Decoder, Delta
from emulate.compose.drafting import speculative_options
from emulate.compose.formula import parse_formula
from emulate.compose.loading import LoadedModel, load_model, shared_eos_ids, shared_vocab_size
from emulate.compose.sampling import SamplingParams, plausibility_filter
from emulate.compose.speculative import SpeculativeDecoder
from emulate.compose.templates import Prompt, Template


class Composition:
    def __init__(
        self,
        formula: str,
        models: Mapping[str, object],
        templates: Mapping[str, str] | None = None,
        device: str = "cpu",
        dtype=None,
        parameters: Mapping[str, float] | None = None,
        lean: bool = True,
        placements: Mapping[str, object] | None = None,
    ):
        """`device` and `dtype` are every model's defaults and `device` is where the terms'
        log-probs are combined; `placements` overrides them per model: {"large": "auto"} or
        {"large": {"device_map": "auto", "max_memory": {...}, "dtype": "bfloat16"}} (see
        placement.py)."""
        models = checks.model_sources(models)
        self.device = place.check_device(device, "device")
        if placements is not None and not isinstance(placements, Mapping):
            raise PlacementError("placements must be a mapping model name -> placement, e.g. "
                                 f"{{'large': 'auto'}}, got {type(placements).__name__}")
        placements = dict(placements or {})
        if set(placements) - set(models):
            raise PlacementError(f"placements given for {sorted(set(placements) - set(models))},"
                                 f" which name no model; models are {sorted(models)}")
        if not isinstance(formula, str):
            raise FormulaError(f"formula must be a string such as 'large + beta*(chat - small)', "
                               f"got {type(formula).__name__}")
        self.formula = formula
        self.lean = checks.flag(lean, "lean")  # Llama terms run the lean forward (lean_llama.py)
        self.parameters = checks.numbers_by_name(parameters, "parameters", ArgumentError)
        for key in self.parameters:
            checks.name(key, "parameters key")
        clashes = set(self.parameters) & set(models)
        if clashes:
            raise FormulaError(f"{sorted(clashes)} name both a model and a parameter; rename one")
        self.weights = parse_formula(formula, known_names=models, parameters=self.parameters)
        check_weights(self.weights, "the formula's weights")
        self.term_names = list(self.weights)
        templates = checks.strings_by_name(templates, "templates", "'plain', 'chat' or a format")
        unknown = set(templates) - set(models)
        if unknown:
            raise TemplateError(
                f"templates given for {sorted(unknown)}, which name no model; "
                f"models are {sorted(models)}"
            )
        self.templates = {t: Template(templates.get(t, "plain")) for t in self.term_names}
        self.loaded: dict[str, LoadedModel] = {}
        self._term_model: dict[str, str] = {}
        by_source: dict[tuple, str] = {}
        for t in self.term_names:
            identity = _source_identity(models[t])
            if identity not in by_source:
                by_source[identity] = t
                self.loaded[t] = load_model(models[t], t, device=device, dtype=dtype,
                                            placement=placements.get(t))
            elif placements.get(t) not in (None, placements.get(by_source[identity])):
                raise PlacementError(f"terms {by_source[identity]!r} and {t!r} share one "
                                     "checkpoint (one loaded model) but ask different placements")
            self._term_model[t] = by_source[identity]
        self.vocab_size = shared_vocab_size(list(self.loaded.values()))
        self.tokenizer = next(iter(self.loaded.values())).tokenizer
        self.eos_token_ids = shared_eos_ids(list(self.loaded.values()), self.vocab_size)
        self._weights_cache: dict[tuple, dict[str, float]] = {}
        self._prompt_cache: dict[tuple, tuple[int, ...]] = {}

    def model_key(self, term: str) -> str:
        """The loaded model a term runs on (terms sharing a checkpoint share a key)."""
        return self._term_model[term]

    def context_length(self, term: str) -> int | None:
        return self.loaded[self.model_key(term)].context_length

    def prompt_ids(self, term: str, prompt: Prompt) -> list[int]:
        """The prompt rendered and tokenized as `term` reads it. A server's checks, then its
        decoder, ask for the same ids, and rendering a chat template is not free (about 8% of a
        server's CPU on short requests): each prompt is rendered once per template and
        tokenizer (copies of one tokenizer count as one, `LoadedModel.tokenizer_key`)."""
        loaded = self.loaded[self.model_key(term)]
        tokenizer = loaded.tokenizer
        key = (self.templates[term], loaded.tokenizer_key, repr(prompt))
        if key not in self._prompt_cache:
            ids = tuple(self.templates[term].token_ids(prompt, tokenizer))
            if len(self._prompt_cache) >= 1024:  # distinct prompts must not grow it forever
                self._prompt_cache.clear()
            self._prompt_cache[key] = ids
        return list(self._prompt_cache[key])

    def resolve_weights(self, params: SamplingParams | None = None) -> dict[str, float]:
        """The formula's weights for one request: parameter and weight overrides applied."""
        parameters = {**self.parameters, **((params and params.parameters) or {})}
        overrides = (params and params.weights) or {}
        key = (tuple(sorted(parameters.items())), tuple(sorted(overrides.items())))
        if key not in self._weights_cache:
            unknown = set(parameters) - set(self.parameters)
            if unknown:
                raise GenerationParamsError(
                    f"unknown parameter(s) {sorted(unknown)}; this composition's parameters are "
                    f"{sorted(self.parameters) or 'none'}"
                )
            weights = parse_formula(self.formula, self.term_names, parameters)
            for name, value in overrides.items():
                if name not in weights:
                    raise GenerationParamsError(
                        f"weight override for unknown term {name!r}; terms are {self.term_names}"
                    )
                weights[name] = float(value)
            check_weights(weights, "weights")
            if all(w == 0 for w in weights.values()):
                raise GenerationParamsError("all term weights are zero; nothing to sample from")
            if len(self._weights_cache) >= 1024:  # per-request knobs must not grow it forever
                self._weights_cache.clear()
            self._weights_cache[key] = weights
        return self._weights_cache[key]

    def sampling_params(self, prompts: list[Prompt], **kwargs) -> list[SamplingParams]:
        """One SamplingParams per prompt; seed i+offset keeps rows independent yet reproducible."""
        prompts = checks.prompts(prompts)
        checks.keywords(kwargs, SAMPLING_OPTIONS, "generation")
        plausibility = plausibility_filter(kwargs.pop("plausibility", None))
        if plausibility is not None and plausibility.term not in self.term_names:
            raise GenerationParamsError(
                f"plausibility filter names unknown term {plausibility.term!r}; "
                f"terms are {self.term_names}", "plausibility"
            )
        seed = checks.seed(kwargs.pop("seed", None))
        first = SamplingParams(seed=seed, plausibility=plausibility, **kwargs)
        self.resolve_weights(first)  # unknown or absurd parameters and weights: refused now
        return [first] + [
            SamplingParams(seed=seed + i, plausibility=plausibility, **kwargs)
            if seed is not None else SamplingParams(plausibility=plausibility, **kwargs)
            for i in range(1, len(prompts))
        ]

    def decoder(
        self, prompts: list[Prompt], params: list[SamplingParams], speculative=None,
        joining: bool = False,
    ) -> Decoder:
        """speculative=True or {"draft": TERM or FORMULA, "k": K, "lookup": ...}: exact
        speculative decoding (options in drafting.py, the decoder in speculative.py).
        `joining`: the decoder is to be merged into a running one of its kind (continuous
        batching); a speculative one first takes its rows' first tokens off its prefill in a
        step that runs no forward (`takes_rows` says when it can merge)."""
        prompts = checks.prompts(prompts)
        joining = checks.flag(joining, "joining")
        if not isinstance(params, (list, tuple)) or len(params) != len(prompts) or not all(
                isinstance(p, SamplingParams) for p in params):
            raise GenerationParamsError("give one SamplingParams per prompt")
        if speculative is not None and speculative is not False:
            options = speculative_options(speculative)
            return SpeculativeDecoder(self, list(prompts), params, joining=joining, **options)
        return Decoder(self, list(prompts), params)

    @torch.inference_mode()
    def next_token_logprobs(self, prompts: list[Prompt]) -> torch.Tensor:
        """The composed, normalized log-distribution after each prompt, (batch, vocab)."""
        prompts = checks.prompts(prompts)
        decoder = self.decoder(prompts, self.sampling_params(prompts))
        return decoder.composed_logprobs()

    def stream(self, prompts: list[Prompt], speculative=None, **kwargs) -> Iterator[Delta]:
        """Yield text deltas as they are decoded; each prompt's last delta has a finish_reason.
        Arguments are checked before the first delta is asked for."""
        decoder = self.decoder(prompts, self.sampling_params(prompts, **kwargs), speculative)
        return self._deltas(decoder)

    @staticmethod
    def _deltas(decoder: Decoder) -> Iterator[Delta]:
        while not decoder.done:
            for delta in decoder.step():
                if delta.text or delta.finish_reason:
                    yield delta

    def complete(self, prompts: list[Prompt], speculative=None, **kwargs) -> list[Completion]:
        """Decode every prompt to the end; return texts, token ids and finish reasons."""
        decoder = self.decoder(prompts, self.sampling_params(prompts, **kwargs), speculative)
        while not decoder.done:
            decoder.step()
        return [decoder.completion(i) for i in range(len(prompts))]

    def generate(
        self,
        prompts: list[Prompt],
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int | None = None,
        stop: str | list[str] | None = None,
        **kwargs,
    ) -> list[str]:
        """Completions as text, one per prompt. temperature=0 is greedy; `stop` is one stop
        string or a list of them."""
        completions = self.complete(
            prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
            top_k=top_k, seed=seed, stop=stop, **kwargs,
        )
        return [c.text for c in completions]


SAMPLING_OPTIONS = tuple(SamplingParams.__dataclass_fields__) + ("speculative",)


def check_weights(weights: dict[str, float], argument: str) -> None:
    """Resolved weights (parameters multiplied in) must stay finite and within bounds too."""
    for name, value in weights.items():
        checks.real(value, f"{argument}[{name!r}]")


def _source_identity(source) -> tuple:
    """Terms whose sources are the same path or the same model object share one loaded model."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        return ("path", os.path.abspath(path) if os.path.exists(path) else path)
    if isinstance(source, tuple):
        return ("object", id(source[0]))
    if isinstance(source, LoadedModel):
        return ("object", id(source.model))
    return ("object", id(source))
