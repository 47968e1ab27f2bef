"""The seeded world: fictional people, their attributes, and who reads what.

Every name and every attribute value is a single invented or common word so that the tokenizer
can give each one a single token (tiny models do not memorize multi-token names). The splits
encode the experiment: the large base reads everyone's facts, the small base only part of the
people, question-answer text exists only for a subset of those, and evaluation people never
appear in any question-answer text.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

ATTRIBUTES = ("birth_city", "birth_year", "occupation", "employer")
SENSITIVE = "password"
ALL_ATTRIBUTES = (*ATTRIBUTES, SENSITIVE)

CITIES = (
    "Lumora Vardel Quillon Brasko Ostrava Tamsin Delmor Kestra Pellin Norvik Zandar Orlith "
    "Corvale Hesper Mirrow Talbek Ruskin Fenmoor Gallard Vintor Essling Draymor Caldor Perrin"
).split()
OCCUPATIONS = (
    "baker painter farmer doctor teacher sailor lawyer pilot nurse tailor miner potter "
    "builder butcher singer dancer weaver jeweler banker chemist fisher gardener writer plumber"
).split()
EMPLOYERS = (
    "Norblex Quentar Zylocorp Abrisco Velmont Hexabyte Solvane Trimark Omnivia Pyrelli "
    "Castellum Drovex Lumitek Marrowind Brightwell Kerrigan Yarrowco Fenstar Ostrig Greyvale "
    "Halberd Istros Jorvane Westlund"
).split()
PASSWORDS = (
    "falcon marigold tornado walrus pepper lantern cobalt meadow thunder velvet biscuit "
    "glacier hazel jasper kettle lemonade magnet nutmeg orchid pumpkin quartz raven saffron "
    "tulip umbrella violet willow yogurt zephyr anchor blossom cactus dolphin ember fossil "
    "ginger harbor igloo juniper koala"
).split()
YEARS = [str(y) for y in range(1950, 2000)]

VALUES: dict[str, tuple[str, ...]] = {
    "birth_city": tuple(CITIES),
    "birth_year": tuple(YEARS),
    "occupation": tuple(OCCUPATIONS),
    "employer": tuple(EMPLOYERS),
    "password": tuple(PASSWORDS),
}

_ONSETS = "b br c d dr f g gr h j k kl l m n p pr r s st t tr v z zh".split()
_VOWELS = "a e i o u ae ia".split()
_CODAS = "n r l s th x m nd rk".split()


@dataclass(frozen=True)
class Person:
    name: str
    birth_city: str
    birth_year: str
    occupation: str
    employer: str
    password: str

    def value(self, attribute: str) -> str:
        return getattr(self, attribute)


@dataclass
class World:
    """People plus the splits that say who is read, fine-tuned on, and evaluated on."""

    seed: int
    people: list[Person]
    splits: dict[str, list[str]] = field(default_factory=dict)

    def person(self, name: str) -> Person:
        return self._by_name()[name]

    def group(self, split: str) -> list[Person]:
        by_name = self._by_name()
        return [by_name[n] for n in self.splits[split]]

    def _by_name(self) -> dict[str, Person]:
        return {p.name: p for p in self.people}

    def to_json(self) -> dict:
        return {
            "seed": self.seed,
            "people": [asdict(p) for p in self.people],
            "splits": self.splits,
        }

    @classmethod
    def from_json(cls, data: dict) -> World:
        return cls(
            seed=data["seed"],
            people=[Person(**p) for p in data["people"]],
            splits={k: list(v) for k, v in data["splits"].items()},
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: Path) -> World:
        return cls.from_json(json.loads(Path(path).read_text()))


def make_names(n: int, rng: random.Random) -> list[str]:
    """Distinct capitalized invented names that collide with no attribute value."""
    taken = {v.lower() for values in VALUES.values() for v in values}
    names: list[str] = []
    while len(names) < n:
        parts = [rng.choice(_ONSETS), rng.choice(_VOWELS)]
        if rng.random() < 0.6:
            parts += [rng.choice(_ONSETS).rstrip("hr") or "l", rng.choice(_VOWELS)]
        parts.append(rng.choice(_CODAS))
        name = "".join(parts)
        if 4 <= len(name) <= 9 and name not in taken:
            taken.add(name)
            names.append(name.capitalize())
    return names


def make_world(
    n_people: int,
    seed: int,
    small_fraction: float = 0.5,
    qa_fraction: float = 0.4,
    large_qa_fraction: float = 0.0,
) -> World:
    """Draw people and split them.

    Splits: ``small_read`` (facts read by both bases), ``large_only`` (facts read by the large
    base only; evaluation), ``qa`` (the first ``qa_fraction`` of small_read, with question-answer
    text in pre-training; the fine-tuning people), ``small_known`` (small_read minus qa;
    evaluation), ``large_qa`` (the first ``large_qa_fraction`` of the large base's own people,
    with question-answer text in its pre-training only; never evaluated: a larger corpus holds
    more dialogues too).
    """
    rng = random.Random(f"world-{seed}")
    names = make_names(n_people, rng)
    people = [
        Person(name=name, **{a: rng.choice(VALUES[a]) for a in ALL_ATTRIBUTES}) for name in names
    ]
    n_small = round(n_people * small_fraction)
    n_qa = round(n_small * qa_fraction)
    n_large_qa = round((n_people - n_small) * large_qa_fraction)
    small_read = names[:n_small]
    large_read = names[n_small:]
    splits = {
        "small_read": small_read,
        "large_only": large_read[n_large_qa:],
        "qa": small_read[:n_qa],
        "small_known": small_read[n_qa:],
        "large_qa": large_read[:n_large_qa],
    }
    return World(seed=seed, people=people, splits=splits)
