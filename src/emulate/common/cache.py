"""Where built worlds live, and one discipline for building and loading them.

Every system caches what it builds under ``$EMULATE_HOME`` (default ``~/.cache/emulate``) in a
folder per size and seed. ``cached_build`` builds into a temporary folder beside the target and
renames it into place only when complete, under a lock that makes a second build of the same
folder wait and then use the first one's result; a build stopped by an error or Ctrl-C leaves
no temporary folder and no target. ``verified_manifest`` loads a folder only after checking every
file against the manifest (``manifest.py``), and otherwise says what differs and how to rebuild.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from emulate.common import manifest as manifests
from emulate.common.manifest import CacheError

__all__ = ["CacheError", "build_key", "cache_root", "cached_build", "verified_manifest",
           "world_dir"]
# What a manifest may not take from a build's extras: the discipline writes these itself.
_OWN = ("kind", "key", "spec", "versions", "files")


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


def cached_build(out: str | Path, kind: str, key: str, spec,
                 build_fn: Callable[[Path], dict]) -> Path:
    """``out`` holding a verified ``kind`` build of ``key``; built first unless it already is.

    ``build_fn(folder)`` writes the build into ``folder`` (a fresh temporary one) and returns
    the manifest's extras (sizes, seeds, losses, timings); the manifest adds every file with its
    size and sha256, the key, the spec and the library versions.
    """
    out = Path(out)
    if _usable(out, kind, key, spec):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with _locked(out):
        if _usable(out, kind, key, spec):  # another process built it while this one waited
            return out
        _refuse_foreign(out)
        _remove_leftovers(out)
        building = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
        try:
            extras = build_fn(building) or {}
            clash = sorted(set(extras) & set(_OWN))
            if clash:
                raise ValueError(f"a build's extras may not set {clash}")
            manifests.write(building, {
                **extras, "kind": kind, "key": key, "spec": spec,
                "versions": manifests.versions(), "files": manifests.listing(building),
            })
            _move_into_place(building, out)
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return out


def verified_manifest(out: str | Path, kind: str,
                      expected: Callable[[dict], tuple[str, object]] | None = None) -> dict:
    """The manifest of the ``kind`` build in ``out``, after checking the folder against it.

    ``expected(manifest) -> (key, spec)`` gives what the current code would build for the
    manifest's own arguments (it may raise an error of its own, e.g. for a size it does not
    know); without it only the files, kind and versions are checked. Raises ``CacheError``
    listing every difference, with the command that rebuilds the folder.
    """
    out = Path(out)
    what = "world" if kind == "world" else f"{kind} world"  # the toy world is kind "world"
    manifest = manifests.read(out)
    if manifest is None:
        raise CacheError(f"{out} holds no built {what} (no readable {manifests.MANIFEST}); "
                         f"build it: `{rebuild_command(out, kind, None)}`")
    key, spec = expected(manifest) if expected else (None, None)
    found = manifests.problems(out, manifest, kind, key, spec)
    if found:
        listed = "\n".join(f"  - {problem}" for problem in found)
        raise CacheError(f"{out} holds a {what} that cannot be used:\n{listed}\n"
                         f"rebuild it: `{rebuild_command(out, kind, manifest)}`", found)
    return manifest


def rebuild_command(out: Path, kind: str, manifest: dict | None) -> str:
    """The command line that builds ``out`` again, with the manifest's size and seed if known."""
    command = f"emulate {kind} build --out {out}"
    for flag in ("size", "seed"):
        if manifest and isinstance(manifest.get(flag), str | int):
            command += f" --{flag} {manifest[flag]}"
    return command


def _usable(out: Path, kind: str, key: str, spec) -> bool:
    manifest = manifests.read(out)
    return manifest is not None and not manifests.problems(out, manifest, kind, key, spec)


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``.<name>.lock`` beside ``out``; waits for another builder."""
    with open(out.parent / f".{out.name}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another build of {out} to finish", file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _refuse_foreign(out: Path) -> None:
    """Only an empty folder or an earlier build (it has a manifest) may be replaced."""
    if not out.exists():
        return
    if not out.is_dir():
        raise CacheError(f"{out} is a file, not a build folder; remove it or choose another --out")
    if any(out.iterdir()) and not (out / manifests.MANIFEST).exists():
        raise CacheError(f"{out} holds files but no {manifests.MANIFEST}, so it is not a build "
                         f"this could replace; remove it or choose another --out")


def _remove_leftovers(out: Path) -> None:
    """Temporary folders of builds that died (the lock is held: none is still running)."""
    for pattern in (f".{out.name}.building-*", f".{out.name}.stale-*"):
        for leftover in out.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)


def _move_into_place(building: Path, out: Path) -> None:
    """Rename the finished build onto ``out``; an earlier one is moved aside, then removed."""
    stale = None
    if out.exists():
        stale = Path(tempfile.mkdtemp(prefix=f".{out.name}.stale-", dir=out.parent))
        out.rename(stale / out.name)
    building.rename(out)
    if stale is not None:
        shutil.rmtree(stale, ignore_errors=True)
