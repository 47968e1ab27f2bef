"""Server configuration: which compositions to serve, built from a YAML or TOML file.

    models:                  # optional: checkpoints by name, each loaded once
      small_base: worlds/micro/small_base
      large_base:            # a path, or a path with its placement (see compose/placement.py)
        path: worlds/micro/large_base
        device_map: auto     # or balanced, sequential, {module: device}; or device: cuda:1
        max_memory: {0: 40GiB, 1: 40GiB, cpu: 100GiB}
        dtype: bfloat16
      small_helpful: worlds/micro/small_helpful
    compositions:
      eft-helpful:           # the name clients pass as `model`
        formula: large_base + beta*(small_helpful - small_base)
        parameters: {beta: 1.0}
        template: chat       # default template of every term
        terms:               # term -> a key of `models` or a path, or {model: ..., template: ...}
          large_base: large_base
          small_helpful: small_helpful
          small_base: small_base
        defaults: {temperature: 0.7, max_tokens: 128}
    server: {max_batch: 32, max_cohorts: 4, max_queue: 256}

Relative paths are read from the config file's folder. Terms of any composition that resolve to
the same checkpoint share one loaded model (one copy in memory, and one forward per step when
they sit in the same composition).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from emulate.common.errors import EmulateError
from emulate.compose.placement import placement

DEFAULT_NAME = "toy-eft"


class ConfigError(EmulateError, ValueError):
    """A server config that cannot be served; the message names the offending entry."""


@dataclass
class Defaults:
    """Per-composition defaults for request fields a client leaves out."""

    max_tokens: int | None = None  # chat default; None = as many as the context allows
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    plausibility: str | None = None  # conservative decoding: a term name, or "term:top_p"
    # Exact speculative decoding unless a request says otherwise: true, or {draft, k, adaptive,
    # lookup}; a request's own options override these one by one, except lookup.
    speculative: bool | dict | None = None
    max_tokens_limit: int | None = None  # requests asking more get 400; None = the context


@dataclass
class CompositionSpec:
    name: str
    formula: str
    terms: dict[str, tuple[str, str]]  # term -> (checkpoint source, template)
    parameters: dict[str, float] = field(default_factory=dict)
    defaults: Defaults = field(default_factory=Defaults)
    description: str = ""


@dataclass
class ServerSettings:
    max_batch: int = 32  # rows (prompts x n) decoded in one forward
    max_cohorts: int = 4  # batches in flight at once, stepped in turn
    admit_wait: float = 0.02  # seconds arrivals may gather before joining a running batch
    max_queue: int = 256  # rows waiting for a batch; past it requests get 503 + Retry-After
    queue_timeout: float = 60.0  # seconds a request may wait for a batch before a 503
    max_body_bytes: int = 1_000_000
    max_n: int = 16
    max_prompts: int = 32  # prompts in one /v1/completions request
    device: str = "cpu"
    dtype: str | None = None
    threads: int | None = None  # torch intra-op threads while serving; None = torch's default
    engine: str = "process"  # where the models decode: "process" (their own) or "thread"


@dataclass
class ServerConfig:
    compositions: dict[str, CompositionSpec]
    server: ServerSettings = field(default_factory=ServerSettings)
    placements: dict[str, dict] = field(default_factory=dict)  # checkpoint -> placement fields


def load_config(path: str | Path) -> ServerConfig:
    """Read a .yaml/.yml/.toml config file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {str(path)!r}: {exc.strerror}") from None
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        kind = "TOML" if path.suffix == ".toml" else "YAML"
        raise ConfigError(f"config {str(path)!r} is not valid {kind}: {exc}") from None
    return parse_config(data, base_dir=path.parent)


def parse_config(data, base_dir: str | Path = ".") -> ServerConfig:
    """Check a config mapping entry by entry; raise ConfigError naming the first bad one."""
    base_dir = Path(base_dir)
    _expect(data, dict, "the config", "a mapping with a 'compositions' section")
    unknown = set(data) - {"models", "compositions", "server"}
    if unknown:
        raise ConfigError(f"unknown config section(s) {sorted(unknown)}; "
                          "expected models, compositions, server")
    models = data.get("models") or {}
    _expect(models, dict, "models", "a mapping name -> checkpoint path or {path, placement}")
    sources, placements = {}, {}
    for name, source in models.items():
        if isinstance(source, dict):
            source = dict(source)
            path = source.pop("path", None)
            _expect(path, str, f"models.{name}.path", "a checkpoint path")
            try:  # the form only: the devices are the serving machine's
                placement(source, str(name), here=False)
            except EmulateError as exc:
                raise ConfigError(f"models.{name}: {exc}") from None
            sources[name] = _resolve(path, base_dir)
            placements[sources[name]] = source
            continue
        _expect(source, str, f"models.{name}", "a checkpoint path or {path, placement}")
        sources[name] = _resolve(source, base_dir)
    compositions = data.get("compositions")
    _expect(compositions, dict, "compositions", "a mapping name -> composition")
    if not compositions:
        raise ConfigError("compositions: name at least one composition to serve")
    specs = {
        str(name): _composition(str(name), body, sources, base_dir)
        for name, body in compositions.items()
    }
    return ServerConfig(specs, _settings(data.get("server") or {}), placements)


def _composition(name: str, body, sources: dict[str, str], base_dir: Path) -> CompositionSpec:
    where = f"compositions.{name}"
    _expect(body, dict, where, "a mapping with formula and terms")
    allowed = {"formula", "terms", "parameters", "template", "defaults", "description"}
    unknown = set(body) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    formula = body.get("formula")
    _expect(formula, str, f"{where}.formula", "a formula such as 'large + beta*(chat - small)'")
    terms_body = body.get("terms")
    _expect(terms_body, dict, f"{where}.terms", "a mapping term -> model path or {model, template}")
    default_template = body.get("template", "plain")
    _expect(default_template, str, f"{where}.template", "plain, chat or a '{prompt}' format")
    terms: dict[str, tuple[str, str]] = {}
    for term, entry in terms_body.items():
        template = default_template
        if isinstance(entry, dict):
            extra = set(entry) - {"model", "template"}
            if extra:
                raise ConfigError(f"{where}.terms.{term}: unknown key(s) {sorted(extra)}")
            template = entry.get("template", template)
            entry = entry.get("model")
        _expect(entry, str, f"{where}.terms.{term}", "a key of `models` or a checkpoint path")
        _expect(template, str, f"{where}.terms.{term}.template", "plain, chat or '{prompt}'")
        terms[str(term)] = (sources.get(entry) or _resolve(entry, base_dir), template)
    parameters = body.get("parameters") or {}
    _expect(parameters, dict, f"{where}.parameters", "a mapping name -> number")
    for key, value in parameters.items():
        _number(value, f"{where}.parameters.{key}")
    defaults = body.get("defaults") or {}
    _expect(defaults, dict, f"{where}.defaults", "a mapping of request defaults")
    known = set(Defaults.__dataclass_fields__)
    unknown = set(defaults) - known
    if unknown:
        raise ConfigError(f"{where}.defaults: unknown key(s) {sorted(unknown)}; "
                          f"allowed: {sorted(known)}")
    defaults = Defaults(**defaults)
    _check_defaults(defaults, terms, parameters, f"{where}.defaults")
    return CompositionSpec(
        name=name, formula=formula, terms=terms,
        parameters={k: float(v) for k, v in parameters.items()},
        defaults=defaults, description=str(body.get("description", "")),
    )


def _check_defaults(defaults: Defaults, terms, parameters, where: str) -> None:
    from emulate.compose.drafting import check_speculative_options
    from emulate.compose.sampling import SamplingParams

    for key in ("max_tokens", "max_tokens_limit"):
        value = getattr(defaults, key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 1):
            raise ConfigError(f"{where}.{key} must be a positive integer, got {value!r}")
    for key in ("temperature", "top_p", "min_p"):
        _number(getattr(defaults, key), f"{where}.{key}")
    try:
        SamplingParams(temperature=defaults.temperature, top_p=defaults.top_p,
                       top_k=defaults.top_k, min_p=defaults.min_p)
    except EmulateError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if defaults.plausibility is not None:
        _expect(defaults.plausibility, str, f"{where}.plausibility", "'term' or 'term:top_p'")
        term = defaults.plausibility.partition(":")[0]
        if term not in terms:
            raise ConfigError(f"{where}.plausibility names unknown term {term!r}; "
                              f"terms are {sorted(terms)}")
    if defaults.speculative not in (None, False):
        where_spec = f"{where}.speculative"
        _expect(defaults.speculative, (bool, dict), where_spec,
                "true or {draft, k, adaptive, lookup}")
        if isinstance(defaults.speculative, dict) and (
                set(defaults.speculative) - {"draft", "k", "adaptive", "lookup"}):
            raise ConfigError(f"{where_spec}: only draft, k, adaptive and lookup can be set here")
        try:
            check_speculative_options(defaults.speculative, list(terms), parameters)
        except EmulateError as exc:
            raise ConfigError(f"{where_spec}: {exc}") from None


def _settings(body) -> ServerSettings:
    _expect(body, dict, "server", "a mapping of server settings")
    known = ServerSettings.__dataclass_fields__
    unknown = set(body) - set(known)
    if unknown:
        raise ConfigError(f"server: unknown key(s) {sorted(unknown)}; allowed: {sorted(known)}")
    settings = ServerSettings(**body)
    for key in ("max_batch", "max_cohorts", "max_body_bytes", "max_n", "max_prompts"):
        value = getattr(settings, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"server.{key} must be a positive integer, got {value!r}")
    if settings.threads is not None and (not isinstance(settings.threads, int)
                                         or settings.threads < 1):
        raise ConfigError(f"server.threads must be a positive integer, got {settings.threads!r}")
    if settings.engine not in ("process", "thread"):
        raise ConfigError(f"server.engine must be 'process' or 'thread', got {settings.engine!r}")
    if not isinstance(settings.max_queue, int) or settings.max_queue < 0:
        raise ConfigError(f"server.max_queue must be an integer >= 0, got {settings.max_queue!r}")
    _number(settings.queue_timeout, "server.queue_timeout")
    _number(settings.admit_wait, "server.admit_wait")
    return settings


def build_compositions(config: ServerConfig, weights: bool = True) -> dict:
    """Load every checkpoint once and build one Composition per entry.

    `weights=False` loads each model's structure only (tokenizer and configs, modules on the
    meta device): enough to check and answer requests in a front end whose engine process holds
    the weights, and it takes no memory for them."""
    from emulate.compose.composition import Composition
    from emulate.compose.drafting import check_speculative
    from emulate.compose.loading import load_model, load_structure

    settings = config.server
    loaded: dict[str, object] = {}
    built = {}
    for name, spec in config.compositions.items():
        models = {}
        for term, (source, _) in spec.terms.items():
            if source not in loaded:
                try:
                    loaded[source] = (
                        load_model(source, term, settings.device, settings.dtype,
                                   config.placements.get(source))
                        if weights else load_structure(source, term))
                except EmulateError as exc:
                    raise ConfigError(f"compositions.{name}.terms.{term}: {exc}") from None
            models[term] = loaded[source]
        try:
            built[name] = Composition(
                spec.formula, models, {t: tpl for t, (_, tpl) in spec.terms.items()},
                device=settings.device, dtype=settings.dtype, parameters=spec.parameters,
            )
            check_speculative(built[name], spec.defaults.speculative)  # e.g. no small draft
        except EmulateError as exc:
            raise ConfigError(f"compositions.{name}: {exc}") from None
    return built


def toy_world_config(size: str = "default", seed: int = 0) -> ServerConfig:
    """The embedded default: the toy family's up-scaled composition (built first if needed)."""
    try:
        from emulate.world import build_world, default_world_dir
    except ImportError:
        raise ConfigError(
            "no --config given and the toy world (emulate.world) is not available in this "
            "install; pass --config FILE naming the compositions to serve"
        ) from None
    try:
        directory = Path(build_world(default_world_dir(size, seed), size=size, seed=seed))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return world_config(directory, description=f"toy world ({size}, seed {seed})")


def world_config(directory: str | Path, name: str = DEFAULT_NAME,
                 description: str = "toy world") -> ServerConfig:
    """Serve a built toy world's up-scaled composition: large_base + beta*(helpful delta)."""
    directory = Path(directory)
    members = ("large_base", "small_helpful", "small_base")
    spec = CompositionSpec(
        name=name, formula="large_base + beta*(small_helpful - small_base)",
        terms={m: (str(directory / m), "chat") for m in members},
        parameters={"beta": 1.0},
        description=f"{description}: the small model's helpfulness up-scaled onto the large base",
    )
    return ServerConfig({name: spec}, ServerSettings(threads=1))  # tiny models: one thread


def _resolve(source: str, base_dir: Path) -> str:
    """A path relative to the config's folder, if it names one there; otherwise as written."""
    candidate = base_dir / source
    if not Path(source).is_absolute() and candidate.exists():
        return str(candidate.resolve())
    return str(Path(source).resolve()) if Path(source).exists() else source


def _expect(value, kind, where: str, what: str) -> None:
    if not isinstance(value, kind):
        raise ConfigError(f"{where} must be {what}, got {type(value).__name__}: {value!r:.60}")


def _number(value, where: str) -> None:
    """A finite number within the bounds the engine takes (the shared checks)."""
    from emulate.compose import checks

    try:
        checks.real(value, where)
    except EmulateError as exc:
        raise ConfigError(str(exc)) from None
