"""Multiple-choice benchmark files as lists of items, with errors that name the line and field.

Two JSONL layouts, told apart line by line: V* Bench's own ``test_questions.jsonl`` (``image``,
``text`` with the options inside as ``(A) ...`` lines, ``label`` the correct letter,
``category``, ``question_id``) and a plain one (``image``, ``question``, ``options``,
``answer``; ``category`` and ``question_id`` optional). V* text is asked as written; a plain
question is asked as written too (write the options into it when the model should see them),
its options being the answers scored. Image paths are relative to the file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from emulate.common.errors import EmulateError

OPTION = re.compile(r"^\(([A-Z])\)\s*(.+?)\s*$", re.MULTILINE)
MAX_ITEMS = 100_000


class BenchFileError(EmulateError, ValueError):
    """A benchmark file, line or field the loader cannot take."""


@dataclass(frozen=True)
class Item:
    """One question: ``answer`` is the correct option's text, ``letters`` maps A, B... to
    options (empty for a plain file without letters in its question)."""

    question_id: str
    image: Path
    question: str
    options: tuple[str, ...]
    answer: str
    category: str

    @property
    def letter(self) -> str:
        return chr(ord("A") + self.options.index(self.answer))


def load(path: str | Path) -> list[Item]:
    """Every item of the file, each image checked to exist (decoded later, when asked)."""
    path = Path(path)
    if not path.is_file():
        raise BenchFileError(f"no benchmark file at {path}; give a JSONL file of questions")
    items = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            if len(items) >= MAX_ITEMS:
                raise BenchFileError(f"{path} holds over {MAX_ITEMS} items; split the file")
            items.append(_item(path, number, line))
    if not items:
        raise BenchFileError(f"{path} holds no questions; give one JSON object per line")
    return items


def _item(path: Path, number: int, line: str) -> Item:
    where = f"{path} line {number}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BenchFileError(f"{where} is not JSON ({exc.msg}); give one object per line") from None
    if not isinstance(row, dict):
        raise BenchFileError(f"{where} is not a JSON object; give one object per line")
    vstar = "text" in row or "label" in row
    fields = ("image", "text", "label") if vstar else ("image", "question", "options", "answer")
    for name in fields:
        if name not in row:
            layout = "V* (image, text, label)" if vstar else "plain (image, question, options, "
            layout += "" if vstar else "answer)"
            raise BenchFileError(f"{where} has no {name!r} field; the {layout} layout needs it")
    for name in ("image", "text", "label", "question", "answer"):
        if name in row and (not isinstance(row[name], str) or not row[name].strip()):
            raise BenchFileError(f"{where}: field {name!r} must be a non-empty string")
    image = (path.parent / row["image"]).resolve()
    if not image.is_file():
        raise BenchFileError(
            f"{where}: field 'image' names {row['image']}, but there is no file at {image}; "
            "image paths are relative to the benchmark file"
        )
    if vstar:
        options = tuple(text for _, text in OPTION.findall(row["text"]))
        letters = [letter for letter, _ in OPTION.findall(row["text"])]
        label = row["label"].strip().strip("()")
        if not options:
            raise BenchFileError(f"{where}: field 'text' lists no options as '(A) ...' lines")
        if label not in letters:
            raise BenchFileError(
                f"{where}: field 'label' is {row['label']!r}, not one of the letters "
                f"{', '.join(letters)} listed in 'text'"
            )
        question, answer = row["text"], options[letters.index(label)]
        if letters != [chr(ord("A") + i) for i in range(len(letters))]:
            raise BenchFileError(f"{where}: field 'text' letters its options out of order")
    else:
        options = row["options"]
        if not isinstance(options, list) or len(options) < 2 or not all(
            isinstance(o, str) and o.strip() for o in options
        ):
            raise BenchFileError(f"{where}: field 'options' must be a list of 2 or more strings")
        options, question, answer = tuple(options), row["question"], row["answer"]
        if answer not in options:
            raise BenchFileError(f"{where}: field 'answer' {answer!r} is not one of 'options'")
    category = row.get("category", "all")
    return Item(str(row.get("question_id", number)), image, question, options, answer,
                str(category))


def is_right(reply: str | None, item: Item) -> bool:
    """Whether a reply names the correct option, by its text or its letter (case ignored)."""
    if reply is None:
        return False
    said = reply.strip().rstrip(".").strip().casefold()
    if said == item.answer.strip().casefold():
        return True
    letter = item.letter.casefold()
    return said.strip("()") == letter or said.startswith(f"({letter})")
