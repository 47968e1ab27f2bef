"""The synthetic image-caption universe: concepts, datasets, captions and the pretraining pool.

A concept is a combination of visual factors (colour, pattern, shape) under a made-up name. The
name is split into shared syllable tokens, as a real CLIP tokenizer splits a new word, so a
name the pretraining pool never shows is classified zero-shot near chance and learning it moves
pieces that other names share (``whole_names`` keeps the earlier design, a token per name).
Concepts are grouped into datasets, sub-domains with their own concept set and rendering style;
with ``neighbourhoods`` a dataset is a block of factor space (a few hues in both shades, a few
patterns and shapes), so its concepts differ in fine attributes and blocks of different
datasets overlap (similar-looking concepts across tasks). Adaptation datasets are what the
stream teaches (their concepts rare or absent in pretraining); eval-only datasets are never
trained on in the stream and measure retention (their concepts seen in pretraining, with
frequencies along a long tail). A stream replays only a small fixed sample of the pool, which
holds few images of the tail: what the stream forgets is what its replay does not hold.
Everything is drawn from one seed, and images are re-rendered from it on load.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from emulate.continual.render import COLOURS, HUES, PATTERNS, SHAPES, Style, render

TEMPLATES = (
    "a photo of a {name}.",
    "a picture of the {name}.",
    "a {name}.",
    "the {name} on a plain background.",
    "{name}, a {colour} {pattern} {shape}.",
)
ZERO_SHOT_TEMPLATES = ("a photo of a {name}.", "a picture of the {name}.", "a {name}.")
ATTRIBUTE_TEMPLATE = "a {colour} {pattern} {shape}."


@dataclass(frozen=True)
class UniverseSize:
    """How many datasets and concepts, how many images, and how often concepts are seen."""

    adapt_datasets: int
    eval_datasets: int
    concepts_per_dataset: int
    image_size: int
    train_per_concept: int  # stream images per adaptation concept
    test_per_concept: int  # held-out images per concept, for zero-shot accuracy
    pool_images: int  # images in the pretraining pool
    # the fixed sample of the pool a stream's pretraining replay draws on (None: the whole pool,
    # as in worlds built before there was a sample)
    replay_images: int | None = None
    eval_weight: float = 4.0  # pretraining frequency of an eval-only concept: at most this ...
    eval_tail: float = 0.03  # ... and at least this, log-uniform (a long tail, as on the web) ...
    background_weight: float = 1.0  # ... of a pretraining-only concept ...
    rare_weight: float = 0.004  # ... and at most this for an adaptation concept (many get 0)
    absent_fraction: float = 0.7  # adaptation concepts never shown in pretraining
    attribute_captions: float = 0.25  # pool captions that name the factors, not the concept
    # the factor space (the defaults are the first design's: 8 bright colours, 4 patterns)
    shades: int = 1  # 1: the bright shade of each hue; 2: bright and dark
    patterns: int = 4  # the first this many of render.PATTERNS
    lighting: float = 0.0  # every style's lighting jitter (render.Style.lighting)
    neighbourhoods: bool = False  # a dataset is a block of factor space, not a random draw
    pretrain_concepts: int | None = None  # pool-only concepts (None: every combination left)
    whole_names: bool = True  # a tokenizer word per concept name (False: shared syllables)


@dataclass
class Concept:
    name: str
    colour: str
    pattern: str
    shape: str
    dataset: str
    frequency: float  # relative weight in the pretraining pool (0 = never seen)

    @property
    def factors(self) -> tuple[int, int, int]:
        return (
            list(COLOURS).index(self.colour),
            SHAPES.index(self.shape),
            PATTERNS.index(self.pattern),
        )


@dataclass
class Dataset:
    name: str
    role: str  # "adapt" or "eval"
    style: Style
    concepts: list[str] = field(default_factory=list)


@dataclass
class Universe:
    seed: int
    size: UniverseSize
    concepts: dict[str, Concept]
    datasets: dict[str, Dataset]
    pretrain_styles: list[Style]

    @property
    def adapt(self) -> list[Dataset]:
        return [d for d in self.datasets.values() if d.role == "adapt"]

    @property
    def evaluation(self) -> list[Dataset]:
        return [d for d in self.datasets.values() if d.role == "eval"]

    def stream_concepts(self) -> list[str]:
        """Every concept of the adaptation datasets: what a stream orders and teaches."""
        return [c for d in self.adapt for c in d.concepts]

    def words(self) -> list[str]:
        """The whole words of captions and prompts: templates and visual factors, and the
        concept names only with ``whole_names`` (any other word is split into
        ``syllables()``)."""
        fixed = " ".join(TEMPLATES + (ATTRIBUTE_TEMPLATE,)).replace(".", " . ").replace(",", " , ")
        fixed = [w for w in fixed.split() if not w.startswith("{")]
        colours, patterns, shapes = factor_space(self.size)
        names = set(self.concepts) if self.size.whole_names else set()
        return sorted(set(fixed) | set(colours + patterns + shapes) | names)

    def save(self, path: Path) -> None:
        data = {
            "seed": self.seed,
            "size": asdict(self.size),
            "concepts": [asdict(c) for c in self.concepts.values()],
            "datasets": [asdict(d) for d in self.datasets.values()],
            "pretrain_styles": [asdict(s) for s in self.pretrain_styles],
        }
        Path(path).write_text(json.dumps(data, indent=1))

    @classmethod
    def load(cls, path: Path) -> Universe:
        data = json.loads(Path(path).read_text())

        def style(s: dict) -> Style:
            return Style(**{**s, "scale": tuple(s["scale"])})

        size = UniverseSize(**data["size"])
        concepts = {c["name"]: Concept(**c) for c in data["concepts"]}
        datasets = {
            d["name"]: Dataset(d["name"], d["role"], style(d["style"]), d["concepts"])
            for d in data["datasets"]
        }
        return cls(
            data["seed"], size, concepts, datasets, [style(s) for s in data["pretrain_styles"]]
        )


ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "bl", "tr")
VOWELS = ("a", "e", "i", "o", "u")
CODAS = ("", "n", "r", "k", "s")


def syllables() -> list[str]:
    """The pieces every made-up name is built of: onset + vowel syllables, and codas. The
    tokenizer splits a word it does not know into them (a name typed in a prompt, say)."""
    return [o + v for o in ONSETS for v in VOWELS] + [c for c in CODAS if c]


def made_up_names(count: int, rng: np.random.Generator) -> list[str]:
    """Distinct pronounceable nonsense words (``blikor``, ``tavun``, ...): two or three
    syllables and a coda."""
    names: list[str] = []
    seen = set()
    while len(names) < count:
        parts = [rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(int(rng.integers(2, 4)))]
        word = "".join(parts) + str(rng.choice(CODAS))
        if word not in seen:
            seen.add(word)
            names.append(word)
    return names


def _style(rng: np.random.Generator, lighting: float = 0.0) -> Style:
    return Style(
        background=str(rng.choice(["flat", "gradient", "speckle"])),
        level=int(rng.integers(20, 200)),
        noise=float(rng.uniform(0, 25)),
        scale=(float(rng.uniform(0.22, 0.28)), float(rng.uniform(0.32, 0.4))),
        jitter=float(rng.uniform(0.02, 0.12)),
        lighting=lighting,
    )


def factor_space(size: UniverseSize) -> tuple[list[str], list[str], list[str]]:
    """The colours, patterns and shapes a universe of ``size`` draws its concepts from."""
    if size.shades not in (1, 2) or not 1 <= size.patterns <= len(PATTERNS):
        raise ValueError(f"shades must be 1 or 2 and patterns 1-{len(PATTERNS)}")
    return list(COLOURS)[: HUES * size.shades], list(PATTERNS[: size.patterns]), list(SHAPES)


def block_shape(size: UniverseSize) -> tuple[int, int, int]:
    """Hues, patterns and shapes of one dataset's block: ``concepts_per_dataset`` = hues x
    shades x patterns x shapes, split as evenly as the factors allow."""
    left, dims = size.concepts_per_dataset, [1, 1, 1]  # hues, patterns, shapes
    if left % size.shades:
        raise ValueError("concepts_per_dataset must be a multiple of shades")
    left //= size.shades
    turn = 1
    while left > 1 and left % 2 == 0:
        dims[turn] *= 2
        left //= 2
        turn = (turn + 1) % 3
    dims[0] *= left
    return dims[0], dims[1], dims[2]


def _blocks(size: UniverseSize, n_sets: int, rng: np.random.Generator) -> list[list[tuple]]:
    """``n_sets`` disjoint blocks of factor combinations, one per dataset."""
    colours, patterns, shapes = factor_space(size)
    hues, n_patterns, n_shapes = block_shape(size)
    taken: set[tuple] = set()
    blocks = []
    for _ in range(n_sets):
        for _ in range(1000):
            h = rng.choice(HUES, hues, replace=False)
            shade = [colours[i + HUES * s] for i in h for s in range(size.shades)]
            pats = [patterns[i] for i in rng.choice(len(patterns), n_patterns, replace=False)]
            shps = [shapes[i] for i in rng.choice(len(shapes), n_shapes, replace=False)]
            block = list(itertools.product(shade, pats, shps))
            if not taken & set(block):
                break
        else:
            raise ValueError("the factor space holds too few disjoint dataset blocks")
        taken |= set(block)
        blocks.append(block)
    return blocks


def make_universe(size: UniverseSize, seed: int) -> Universe:
    """Draw datasets, styles, concepts and pretraining frequencies from ``seed``."""
    rng = np.random.default_rng(seed)
    combos = list(itertools.product(*factor_space(size)))
    order = rng.permutation(len(combos))
    names = made_up_names(len(combos), rng)
    n_sets = size.adapt_datasets + size.eval_datasets
    k = size.concepts_per_dataset
    if n_sets * k > len(combos):
        raise ValueError("more concepts asked for than factor combinations exist")
    if size.neighbourhoods:
        blocks = _blocks(size, n_sets, rng)
        used = {c for b in blocks for c in b}
        rest = [j for j in order if combos[j] not in used]
        index = {c: j for j, c in enumerate(combos)}
        order = np.array([index[c] for b in blocks for c in b] + rest)
    concepts: dict[str, Concept] = {}
    datasets: dict[str, Dataset] = {}
    for i in range(n_sets):
        role = "adapt" if i < size.adapt_datasets else "eval"
        dname = f"{role}-{i if role == 'adapt' else i - size.adapt_datasets}"
        ds = Dataset(dname, role, _style(rng, size.lighting))
        for j in order[i * k : (i + 1) * k]:
            colour, pattern, shape = combos[j]
            if role == "eval":
                low, high = np.log(size.eval_tail), np.log(size.eval_weight)
                freq = float(np.exp(rng.uniform(low, high)))
            elif rng.random() < size.absent_fraction:
                freq = 0.0
            else:
                freq = float(rng.uniform(0.1, 1.0)) * size.rare_weight
            concepts[names[j]] = Concept(names[j], colour, pattern, shape, dname, freq)
            ds.concepts.append(names[j])
        datasets[dname] = ds
    rest = order[n_sets * k :][: size.pretrain_concepts]  # the rest of the factor space ...
    for j in rest:  # ... (or a share of it): pretraining only
        colour, pattern, shape = combos[j]
        concepts[names[j]] = Concept(
            names[j], colour, pattern, shape, "pretrain", size.background_weight
        )
    extra = [_style(rng, size.lighting) for _ in range(4)]
    pretrain_styles = [d.style for d in datasets.values()] + extra
    return Universe(seed, size, concepts, datasets, pretrain_styles)


@dataclass
class ImageSet:
    """Images (uint8, N x H x W x 3) with the index of each one's concept in ``names``."""

    images: np.ndarray
    labels: np.ndarray
    names: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def _draw(universe: Universe, names: list[str], labels, styles, style_ids, rng) -> np.ndarray:
    factors = np.array([universe.concepts[names[i]].factors for i in labels]).reshape(-1, 3)
    return render(
        factors[:, 0],
        factors[:, 1],
        factors[:, 2],
        styles,
        style_ids,
        universe.size.image_size,
        rng,
    )


def dataset_split(universe: Universe, dataset: str, split: str) -> ImageSet:
    """The ``train`` or ``test`` images of one dataset, rendered in its own style."""
    ds = universe.datasets[dataset]
    per = universe.size.train_per_concept if split == "train" else universe.size.test_per_concept
    index = list(universe.datasets).index(dataset)
    rng = np.random.default_rng([universe.seed, index, 0 if split == "train" else 1])
    labels = np.repeat(np.arange(len(ds.concepts)), per)
    images = _draw(universe, ds.concepts, labels, [ds.style], np.zeros(len(labels), int), rng)
    return ImageSet(images, labels, list(ds.concepts))


def pretraining_pool(universe: Universe) -> ImageSet:
    """Images drawn with each concept's pretraining frequency, in a random pretraining style."""
    rng = np.random.default_rng([universe.seed, 10_000])
    names = [c.name for c in universe.concepts.values() if c.frequency > 0]
    weights = np.array([universe.concepts[n].frequency for n in names])
    labels = rng.choice(len(names), size=universe.size.pool_images, p=weights / weights.sum())
    styles = universe.pretrain_styles
    style_ids = rng.integers(0, len(styles), size=len(labels))
    return ImageSet(_draw(universe, names, labels, styles, style_ids, rng), labels, names)


def replay_sample(universe: Universe, pool: ImageSet) -> ImageSet:
    """The fixed, seeded sample of the pretraining pool that a stream replays: a practitioner
    replays a small subset of the pretraining data, so the long tail is barely in it."""
    if universe.size.replay_images is None:
        return pool
    rng = np.random.default_rng([universe.seed, 20_000])
    rows = np.sort(rng.permutation(len(pool))[: universe.size.replay_images])
    return ImageSet(pool.images[rows], pool.labels[rows], pool.names)


def caption(universe: Universe, name: str, rng: np.random.Generator, attributes: float) -> str:
    """A caption of one image of ``name``: a template with the name, or (with probability
    ``attributes``) only the concept's visual factors."""
    c = universe.concepts[name]
    if rng.random() < attributes:
        template = ATTRIBUTE_TEMPLATE
    else:
        template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    return template.format(name=name, colour=c.colour, pattern=c.pattern, shape=c.shape)
