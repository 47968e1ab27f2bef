"""Errors a user can act on: each names the problem and the fix."""


class EmulateError(Exception):
    """Base class for every error raised on bad input to emulate."""


class FormulaError(EmulateError, ValueError):
    """A formula that is not a linear combination of known terms."""

    def __init__(self, message: str, formula: str = "", position: int | None = None):
        self.formula = formula
        self.position = position
        if formula and position is not None:
            pointer = " " * position + "^"
            message = f"{message}\n  {formula}\n  {pointer}"
        super().__init__(message)


class ArgumentError(EmulateError, ValueError):
    """A bad argument to a public entry point; `argument` names it (e.g. "prompts[2]")."""

    def __init__(self, message: str, argument: str | None = None):
        self.argument = argument
        super().__init__(message)


class VocabularyMismatchError(EmulateError, ValueError):
    """Two terms whose tokenizers map the same id to different tokens."""


class TemplateError(EmulateError, ValueError):
    """A prompt template that cannot be applied to a term's tokenizer."""


class PromptTooLongError(EmulateError, ValueError):
    """A prompt that does not fit in a model's context window."""


class ModelLoadError(EmulateError, ValueError):
    """A model path that is not a loadable causal language model."""


class PlacementError(ModelLoadError):
    """A device, device map, memory budget or dtype that cannot place a model."""


class GenerationParamsError(ArgumentError):
    """A sampling parameter out of range (negative temperature, top_p above 1, ...)."""
