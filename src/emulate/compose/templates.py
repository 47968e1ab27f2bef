"""Prompt templates: how one term reads the conversation.

EFT composes a base model (which reads raw text) with chat models (which read their chat
template), so each term renders the same user prompt its own way, then tokenizes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from emulate.common.errors import TemplateError

Messages = list[dict[str, str]]
Prompt = str | Messages


@dataclass(frozen=True)
class Template:
    """`plain` (text as given), `chat` (the tokenizer's chat template), or a `{prompt}` format."""

    spec: str = "plain"

    def __post_init__(self):
        if self.spec in ("plain", "chat"):
            return
        if "{prompt}" not in self.spec:
            raise TemplateError(
                f"template {self.spec!r} is neither 'plain', 'chat' nor a format string "
                "containing '{prompt}'"
            )
        try:
            self.spec.format(prompt="")
        except (KeyError, IndexError, ValueError) as exc:
            raise TemplateError(
                f"template {self.spec!r} has a placeholder other than {{prompt}} ({exc}); "
                "write literal braces as {{ and }}"
            ) from None

    def token_ids(self, prompt: Prompt, tokenizer) -> list[int]:
        """Render and tokenize a prompt (a string or a list of chat messages) for this term."""
        if self.spec == "chat":
            if not getattr(tokenizer, "chat_template", None):
                raise TemplateError(
                    f"the tokenizer {tokenizer.name_or_path!r} has no chat template; "
                    "give this term the 'plain' template or a format string with {prompt}"
                )
            text = tokenizer.apply_chat_template(
                as_messages(prompt), add_generation_prompt=True, tokenize=False
            )
            return tokenizer(text, add_special_tokens=False)["input_ids"]
        text = as_text(prompt)
        if self.spec != "plain":
            text = self.spec.format(prompt=text)
        return tokenizer(text, add_special_tokens=True)["input_ids"]


def as_messages(prompt: Prompt) -> Messages:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return list(prompt)


def as_text(prompt: Prompt) -> str:
    """A chat transcript seen by a term without a chat template: the turns' texts in order."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(str(message.get("content", "")) for message in prompt)
