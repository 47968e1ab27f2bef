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
from emulate.compose.composition import Composition
from emulate.compose.decoding import Completion, Delta
from emulate.compose.formula import disalign, downscale, mix, parse_formula, upscale
from emulate.compose.sampling import Plausibility, SamplingParams

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
