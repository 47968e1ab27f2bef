"""Where built worlds live, and how a build knows it is already done.

Every system caches what it builds under ``$EMULATE_HOME`` (default ``~/.cache/emulate``) in a
directory per size and seed. A build writes ``manifest.json`` last, holding a key that hashes its
arguments and the code that produced it; a directory whose manifest carries the same key is done.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def cache_root() -> Path:
    """``$EMULATE_HOME``, else ``~/.cache/emulate``."""
    home = os.environ.get("EMULATE_HOME")
    return Path(home) if home else Path.home() / ".cache" / "emulate"


def world_dir(kind: str, size: str, seed: int) -> Path:
    """The default directory of a built world: ``<cache>/<kind>/<size>-seed<seed>``."""
    return cache_root() / kind / f"{size}-seed{seed}"


def build_key(arguments: dict, code_files: list[Path]) -> str:
    """Hash of a build's arguments and of the source files that produce it."""
    h = hashlib.sha256(json.dumps(arguments, sort_keys=True, default=str).encode())
    for path in code_files:
        h.update(Path(path).read_bytes())
    return h.hexdigest()[:16]


def read_manifest(directory: str | Path) -> dict | None:
    """The directory's manifest, or None when there is none (or it is unreadable)."""
    try:
        return json.loads((Path(directory) / "manifest.json").read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


def is_built(directory: str | Path, key: str) -> bool:
    manifest = read_manifest(directory)
    return manifest is not None and manifest.get("key") == key


def write_manifest(directory: str | Path, manifest: dict) -> None:
    """Written last, atomically: a build stopped half-way leaves no manifest behind."""
    path = Path(directory) / "manifest.json"
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(manifest, indent=1))
    partial.replace(path)
