"""What the server benchmark serves and asks: the config serving a built world's up-scaled
composition, and the prompts of each repeat (the world's own held-out questions, or fixed
made-up ones)."""

from __future__ import annotations

import json
import random
from pathlib import Path

NAMES = ("Ada", "Bo", "Cyrus", "Dana", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea")
PROMPTS = [f"Where does {n} live?" for n in NAMES] + [f"What does {n} do?" for n in NAMES]


def world_yaml(world: Path, out: Path, server: dict, lookup: str | None = None) -> str:
    """A config serving a built world's up-scaled composition (as `emulate serve` does), with
    the speculative drafts' `lookup` set when given."""
    terms = ", ".join(
        f"{m}: {world.resolve() / m}" for m in ("large_base", "small_helpful", "small_base")
    )
    out.write_text(
        "compositions:\n  toy-eft:\n"
        "    formula: large_base + beta*(small_helpful - small_base)\n"
        "    parameters: {beta: 1.0}\n    template: chat\n"
        + (f"    defaults: {{speculative: {{lookup: {lookup}}}}}\n" if lookup else "")
        + f"    terms: {{{terms}}}\n"
        f"server: {json.dumps(server)}\n"
    )
    return str(out)


def prompt_sets(args) -> list[tuple[list[str], list[str]]]:
    """Per repeat, the prompts of its one-client phases and of its crowded phases.

    Serving a world, these are its own held-out questions, each asked in one repeat only (they
    cycle only when the repeats ask for more than the world has): the drafts' lookup guesses
    from earlier answers, and a question answered before would be guessed whole, which no new
    question is. Otherwise the fixed PROMPTS, cycled."""
    if not args.questions:
        return [(PROMPTS, PROMPTS)] * args.repeats
    per_repeat = args.baseline_requests + args.requests
    pool = args.questions * (1 + per_repeat * args.repeats // len(args.questions))
    sets = []
    for r in range(args.repeats):
        chunk = pool[r * per_repeat : (r + 1) * per_repeat]
        sets.append((chunk[: args.baseline_requests], chunk[args.baseline_requests :]))
    return sets


def world_questions(world: Path) -> list[str]:
    """The world's held-out questions (people only the large models read, and people the small
    ones know too) in a fixed shuffled order."""
    from emulate.world import load_world
    from emulate.world.corpus import eval_questions

    info = load_world(world)
    questions = [
        q.text for group in ("small_known", "large_only") for q in eval_questions(info.world, group)
    ]
    random.Random(0).shuffle(questions)
    return questions
