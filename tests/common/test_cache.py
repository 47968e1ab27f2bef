"""The cache discipline on a toy build: one build under concurrency, damage named, Ctrl-C clean."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emulate.common.cache import CacheError, cached_build, verified_manifest
from emulate.common.manifest import versions

TOY = Path(__file__).with_name("toy_builds.py")
SPEC = {"layers": 2}


def toy(out: Path, key: str = "k1", spec=None, runs: list | None = None) -> Path:
    def fn(folder: Path) -> dict:
        (folder / "weights.bin").write_bytes(bytes(range(256)) * 64)
        (folder / "sub").mkdir()
        (folder / "sub" / "config.json").write_text('{"layers": 2}')
        if runs is not None:
            runs.append(folder)
        return {"size": "toy", "seed": 3}

    return cached_build(out, "toy", key, spec or SPEC, fn)


def start(out: Path, mode: str, log: Path) -> subprocess.Popen:
    """The toy build as a user's terminal starts it: SIGINT at its default even where this run
    was started in the background (which starts with SIGINT ignored, and Python then never
    raises KeyboardInterrupt)."""
    return subprocess.Popen([sys.executable, str(TOY), str(out), mode, str(log)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".building-" in p.name or ".stale-" in p.name]


def wait_for(condition, seconds: float = 60.0) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def test_a_second_process_waits_for_the_first_build_and_loads_it(tmp_path):
    out, log = tmp_path / "world", tmp_path / "log"
    first = start(out, "gated", log)
    wait_for(lambda: leftovers(tmp_path))  # the first build is under way
    second = start(out, "gated", log)
    for line in second.stderr:  # the second says it waits on the lock, then blocks there
        if "waiting for another build" in line:
            break
    (tmp_path / "go").touch()
    outputs = [p.communicate(timeout=60) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outputs
    assert [o[0].strip() for o in outputs] == [str(out)] * 2
    assert len(log.read_text().split()) == 1  # one build ran
    manifest = verified_manifest(out, "toy")  # every file whole
    assert set(manifest["files"]) == {"a.bin", "sub/b.txt"}
    assert leftovers(tmp_path) == []


def test_a_cached_build_runs_once_and_lists_every_file(tmp_path):
    runs = []
    out = toy(tmp_path / "w", runs=runs)
    assert toy(tmp_path / "w", runs=runs) == out and len(runs) == 1
    manifest = verified_manifest(out, "toy")
    assert manifest["files"]["weights.bin"]["size"] == 256 * 64
    assert set(manifest["files"]) == {"weights.bin", "sub/config.json"}
    assert manifest["versions"] == versions() and manifest["spec"] == SPEC
    assert (manifest["size"], manifest["seed"]) == ("toy", 3)


@pytest.mark.parametrize("damage, named", [
    (lambda d: (d / "sub" / "config.json").unlink(), "sub/config.json is missing"),
    (lambda d: (d / "weights.bin").write_bytes(b"short"), "weights.bin has 5 bytes"),
    (lambda d: (d / "weights.bin").write_bytes(bytes(256 * 64)), "weights.bin has other contents"),
])
def test_a_damaged_file_is_named_and_a_build_repairs_it(tmp_path, damage, named):
    runs = []
    out = toy(tmp_path / "w", runs=runs)
    verified_manifest(out, "toy")  # hashed once before the damage: the damage is still seen
    damage(out)
    with pytest.raises(CacheError) as error:
        verified_manifest(out, "toy")
    message = str(error.value)
    assert named in message
    assert f"`emulate toy build --out {out} --size toy --seed 3`" in message
    toy(out, runs=runs)
    assert len(runs) == 2 and verified_manifest(out, "toy")["files"]
    assert leftovers(tmp_path) == []


def test_another_key_or_spec_is_named_on_load_and_rebuilt_by_a_build(tmp_path):
    runs = []
    out = toy(tmp_path / "w", runs=runs)
    with pytest.raises(CacheError, match="built with key k1; the code and arguments now give k2"):
        verified_manifest(out, "toy", lambda manifest: ("k2", SPEC))
    with pytest.raises(CacheError, match=r"layers \(built 2, now 3\)"):
        verified_manifest(out, "toy", lambda manifest: ("k1", {"layers": 3}))
    with pytest.raises(CacheError, match="holds a 'toy' build, not a 'vision' one"):
        verified_manifest(out, "vision")
    toy(out, key="k2", runs=runs)
    toy(out, key="k2", spec={"layers": 3}, runs=runs)
    assert len(runs) == 3 and verified_manifest(out, "toy")["spec"] == {"layers": 3}


def rewrite_versions(out: Path, **changed) -> None:
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["versions"].update(changed)
    (out / "manifest.json").write_text(json.dumps(manifest))


def test_another_major_transformers_is_stale_and_another_minor_warns(tmp_path):
    out = toy(tmp_path / "w")
    major = int(versions()["transformers"].split(".")[0])
    rewrite_versions(out, transformers=f"{major - 1}.0.0")
    with pytest.raises(CacheError, match=f"built with transformers {major - 1}.0.0"):
        verified_manifest(out, "toy")
    rewrite_versions(out, transformers=f"{major}.0.0.dev-other", emulate=versions()["emulate"])
    with pytest.warns(UserWarning, match="the weights load the same"):
        verified_manifest(out, "toy")
    rewrite_versions(out, transformers=versions()["transformers"], emulate="0.0.1")
    with pytest.raises(CacheError, match="built with emulate 0.0.1"):
        verified_manifest(out, "toy")


@pytest.mark.parametrize("content", ["", "not json", '{"kind": "toy", "key": "k1"}'])
def test_no_or_an_old_manifest_is_a_clear_error(tmp_path, content):
    out = tmp_path / "w"
    out.mkdir()
    if content:
        (out / "manifest.json").write_text(content)
    with pytest.raises(CacheError, match=f"emulate toy build --out {out}"):
        verified_manifest(out, "toy")


def test_a_folder_of_other_files_is_never_replaced(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CacheError, match="holds files but no manifest.json"):
        toy(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_failing_build_leaves_no_folder(tmp_path):
    def fn(folder: Path) -> dict:
        (folder / "half.bin").write_bytes(b"x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        cached_build(tmp_path / "w", "toy", "k", SPEC, fn)
    assert not (tmp_path / "w").exists() and leftovers(tmp_path) == []


def interrupt(process: subprocess.Popen) -> float:
    """Seconds from SIGINT to the process's exit."""
    sent = time.time()
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    return time.time() - sent


def test_ctrl_c_during_a_build_leaves_no_temporary_folder_and_no_target(tmp_path):
    out = tmp_path / "world"
    build = start(out, "hang", tmp_path / "log")
    assert build.stdout.readline().strip() == "building"
    assert leftovers(tmp_path)
    assert interrupt(build) < 60 and build.returncode != 0  # the build sleeps 180 s: not waited
    assert not out.exists() and leftovers(tmp_path) == []


def test_ctrl_c_stops_the_spawned_workers_at_once(tmp_path):
    out, log = tmp_path / "world", tmp_path / "pids"
    build = start(out, "workers", log)
    wait_for(lambda: log.exists() and len(log.read_text().split()) == 2, 120)
    workers = [int(pid) for pid in log.read_text().split()]
    assert interrupt(build) < 60  # the workers' jobs sleep 180 s: none was waited for
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not out.exists() and leftovers(tmp_path) == []
