"""emulate: sample from linear combinations of language models' next-token distributions.

Emulated fine-tuning (EFT) up-scales a small model's fine-tuning onto a large base model;
emulated disalignment (ED) runs a release's alignment backwards as a safety audit. Both are a
formula over model log-probs, e.g. `large + 1.0*(small_chat - small)`.
"""

from emulate.common.errors import (
    EmulateError,
    FormulaError,
    GenerationParamsError,
    ModelLoadError,
    PromptTooLongError,
    TemplateError,
    VocabularyMismatchError,
)
from emulate.common.lazy import lazy_exports

# The engine (torch, transformers) loads on first use, so `emulate --help` and argument errors
# answer at once: `from emulate import Composition` imports it then.
_LAZY = {
    "Composition": "emulate.compose.composition",
    "Completion": "emulate.compose.decoding",
    "Delta": "emulate.compose.decoding",
    "disalign": "emulate.compose.formula",
    "downscale": "emulate.compose.formula",
    "mix": "emulate.compose.formula",
    "parse_formula": "emulate.compose.formula",
    "upscale": "emulate.compose.formula",
    "Plausibility": "emulate.compose.sampling",
    "SamplingParams": "emulate.compose.sampling",
}


__getattr__, __dir__ = lazy_exports(globals(), _LAZY)


__all__ = [
    "Completion",
    "Composition",
    "Delta",
    "EmulateError",
    "FormulaError",
    "GenerationParamsError",
    "ModelLoadError",
    "Plausibility",
    "PromptTooLongError",
    "SamplingParams",
    "TemplateError",
    "VocabularyMismatchError",
    "disalign",
    "downscale",
    "mix",
    "parse_formula",
    "upscale",
]
