"""`emulate vision export`: the world's held-out questions as a benchmark file that `bench`
scores exactly as `eval` does."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from emulate.cli import app
from emulate.vision import benchfile

runner = CliRunner()
N = 6


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def exported(micro_vision, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    result = runner.invoke(app, ["vision", "export", "--world", str(micro_vision), "--out",
                                 str(out), "--n", str(N)])
    assert result.exit_code == 0, result.output
    return out / "questions.jsonl"


def test_export_writes_every_held_out_question_with_its_image(exported):
    items = benchfile.load(exported)
    assert len(items) == 2 * N
    assert {item.category for item in items} == {"fine", "coarse"}
    assert all(item.image.exists() and item.answer in item.options for item in items)


@pytest.mark.parametrize("member, mode", [("tools", "tools"), ("direct", "direct")])
def test_bench_on_the_export_matches_eval_on_the_same_member(micro_vision, exported, member,
                                                             mode):
    evaluated = _json(runner.invoke(app, ["vision", "eval", "--world", str(micro_vision),
                                          "--member", member, "--json", "--n", str(N)]))
    benched = _json(runner.invoke(app, ["vision", "bench", "--model",
                                        str(micro_vision / member), "--file", str(exported),
                                        "--mode", mode, "--json"]))
    for kind in ("fine", "coarse"):
        assert benched["by_category"][kind]["n"] == N
        assert abs(benched["by_category"][kind]["accuracy"] - evaluated[kind]["accuracy"]) < 1e-9


def test_export_of_a_folder_without_a_world_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["vision", "export", "--world", str(tmp_path), "--out",
                                 str(tmp_path / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output
