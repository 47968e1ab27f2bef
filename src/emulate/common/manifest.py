"""What a built folder's manifest promises, and checking that the folder keeps the promise.

A manifest lists every file the build wrote with its size and sha256, the build's key and spec,
and the library versions it was built with. ``problems`` compares a folder with its manifest and
with what the caller expects, and says in words what differs; ``cache.py`` rebuilds on any
problem or raises them.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from emulate.common.errors import EmulateError

MANIFEST = "manifest.json"
LIBRARIES = ("emulate", "torch", "transformers")
_CHUNK = 1 << 20
# sha256 by (path, size, mtime, inode): a folder loaded again in one process is not hashed again.
_hashes: dict[tuple, str] = {}


class CacheError(EmulateError, ValueError):
    """A built folder that is missing, damaged or stale; the message lists what and the fix."""

    def __init__(self, message: str, problems: Iterable[str] = ()):
        self.problems = list(problems)
        super().__init__(message)


def versions() -> dict[str, str]:
    """The installed versions of the libraries a build depends on."""
    return {name: metadata.version(name) for name in LIBRARIES}


def sha256(path: Path) -> str:
    stat = path.stat()
    signature = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if signature not in _hashes:
        h = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        _hashes[signature] = h.hexdigest()
    return _hashes[signature]


def listing(directory: Path) -> dict[str, dict]:
    """``{relative path: {"size", "sha256"}}`` of every file under ``directory``."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)
    return {
        p.relative_to(directory).as_posix(): {"size": p.stat().st_size, "sha256": sha256(p)}
        for p in files
    }


def read(directory: Path) -> dict | None:
    """The folder's manifest as written, or None when there is none or it is not JSON."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


def write(directory: Path, manifest: dict) -> None:
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1))


def problems(directory: Path, manifest: dict, kind: str, key: str | None = None,
             spec=None) -> list[str]:
    """What keeps ``directory`` from being the ``kind`` folder its manifest (and caller) want.

    Versions that differ only in a way that cannot matter are warned about, not listed.
    """
    found = []
    spec = None if spec is None else json.loads(json.dumps(spec, default=str))
    if manifest.get("kind") != kind:
        found.append(f"it holds a {manifest.get('kind')!r} build, not a {kind!r} one")
    if key is not None and manifest.get("key") != key:
        found.append(f"it was built with key {manifest.get('key')}; the code and arguments now "
                     f"give {key} (a source file or a setting changed)")
    if spec is not None and "spec" in manifest and manifest["spec"] != spec:
        found.append("its spec differs: " + _differences(manifest["spec"], spec))
    for field in ("spec", "versions", "files"):
        if field not in manifest:
            found.append(f"its manifest has no {field!r} (written by an older emulate)")
    found += _version_problems(manifest.get("versions") or {})
    files = manifest.get("files")
    if isinstance(files, dict):
        found += [p for name, entry in files.items()
                  if (p := _file_problem(directory, name, entry))]
    return found


def _file_problem(directory: Path, name: str, entry) -> str | None:
    path = directory / name
    if not isinstance(entry, dict) or not {"size", "sha256"} <= set(entry):
        return f"its manifest lists {name} without a size and sha256"
    if not path.is_file():
        return f"{name} is missing"
    size = path.stat().st_size
    if size != entry["size"]:
        return f"{name} has {size} bytes, the manifest says {entry['size']}"
    if sha256(path) != entry["sha256"]:
        return f"{name} has other contents than the build wrote (sha256 differs)"
    return None


def _version_problems(built: dict) -> list[str]:
    """A rebuild for another emulate or another major torch/transformers; a warning otherwise.

    A checkpoint is safetensors plus JSON configs, which torch and transformers keep reading
    across minor versions: a minor difference still loads the same weights, the world is the
    same world up to rounding in how it was trained, and rebuilding a default world costs
    minutes to hours for nothing. So it only warns. A major version (transformers 4 -> 5)
    changes config, tokenizer and processor formats and defaults, and emulate's own version
    changes the layout of the folder itself: those make the build stale.
    """
    found = []
    for name, now in versions().items():
        then = built.get(name)
        if then == now:
            continue
        if then is None or name == "emulate" or _major(then) != _major(now):
            found.append(f"it was built with {name} {then}, this is {name} {now}")
        else:
            warnings.warn(f"built with {name} {then}, running {name} {now}: the weights load "
                          f"the same; rebuild if results must match the build exactly",
                          stacklevel=4)
    return found


def _major(version: str) -> str:
    return version.split(".")[0]


def _differences(built, now) -> str:
    if isinstance(built, dict) and isinstance(now, dict):
        names = sorted(set(built) | set(now))
        return "; ".join(f"{n} (built {built.get(n)!r}, now {now.get(n)!r})"
                         for n in names if built.get(n) != now.get(n))
    return f"built {built!r}, now {now!r}"
