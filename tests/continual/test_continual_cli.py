"""The commands: build is cached, run prints the exact JSON, compare writes its files, and bad
input is one clear error line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from emulate.cli import app

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, ["continual", *args])


def test_cached_build_trains_nothing(continual_world, monkeypatch):
    import emulate.continual.pretrain as pretrain

    def boom(*a, **k):
        raise AssertionError("a cached build trained")

    monkeypatch.setattr(pretrain, "pretrain", boom)
    result = _run("build", "--out", str(continual_world), "--size", "micro", "--seed", "0")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(continual_world)  # bars on stderr: stdout is DIR


def test_run_prints_the_protocol_json(continual_world):
    result = _run(
        "run", "--world", str(continual_world), "--method", "finetune", "--tasks", "3", "--json"
    )
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout)
    assert set(r["start"]) == {"ka", "zs", "chance", "retrieval"}
    assert set(r["retrieval"]) == {"i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5"}
    assert len(r["matrix"]) == 3 and {"forgetting", "bwt", "fwt"} <= set(r)
    assert [p["task"] for p in r["trajectory"]] == [1, 2, 3]
    assert set(r["final"]) == set(r["average"]) == {"ka", "zs", "gm"}
    assert r["final"]["ka"] == r["trajectory"][-1]["ka"]
    avg = sum(p["zs"] for p in r["trajectory"]) / 3
    assert r["average"]["zs"] == pytest.approx(avg)
    assert r["final"]["gm"] == pytest.approx((r["final"]["ka"] * r["final"]["zs"]) ** 0.5)
    assert r["steps_per_task"] == r["budget"]["reference_steps"]
    assert r["mafs_per_task"] > 0


def test_compare_spends_equal_compute(continual_world, tmp_path):
    out = tmp_path / "cmp"
    result = _run(
        "compare",
        "--world",
        str(continual_world),
        "--methods",
        "lora,ema-merge,joint",
        "--tasks",
        "2",
        "--steps",
        "20",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert (out / "trajectory.png").stat().st_size > 0 and (out / "table.md").exists()
    assert (out / "matrix.png").stat().st_size > 0
    joint = results["joint"]
    for r in results.values():
        assert abs(r["mafs_per_task"] / joint["mafs_per_task"] - 1) <= 0.05
    assert results["lora"]["steps_per_task"] > joint["steps_per_task"] == 20
    assert len(results["joint"]["trajectory"]) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "sgd"], "unknown method"),
        (["--ordering", "alphabetical"], "unknown ordering"),
        (["--tasks", "99"], "use --tasks 12 or fewer"),
        (["--mix", "0.5,0.5,0.5"], "not 1"),
        (["--method", "ewc", "--steps", "2"], "raise --steps"),
        (["--schedule", "linear"], "unknown schedule"),
        (["--mix", "nan,0.5,0.5"], "finite non-negative"),
        (["--steps", "0"], "--steps 0 buys no training"),
        (["--merge-weight", "nan"], "not in (0, 1]"),
        (["--method", "ema-merge", "--merge-weight", "7"], "not in (0, 1]"),
        (["--budget", "0"], "--budget 0.0 is not a positive"),
        (["--budget", "-1"], "--budget -1.0 is not a positive"),
        (["--budget", "0.001", "--steps", "20"], "raise --budget"),
        (["--method", "zs-merge", "--merge", "average"], "unknown merge rule"),
        (["--method", "ema-merge", "--merge", "task-arithmetic"], "coincides"),
    ],
)
def test_bad_input_is_one_clear_error(continual_world, args, message):
    result = _run("run", "--world", str(continual_world), "--json", *args)
    output = " ".join(result.output.split())  # the console may wrap the line
    assert result.exit_code == 2
    assert message in output and "Traceback" not in output


def test_missing_world(tmp_path):
    result = _run("run", "--world", str(tmp_path / "nowhere"), "--json")
    assert result.exit_code == 2 and "continual build" in " ".join(result.output.split())


def test_demo_on_the_cached_micro_world(continual_world, tmp_path, monkeypatch):
    monkeypatch.setenv("EMULATE_HOME", str(continual_world.parent.parent))
    result = _run("demo", "--size", "micro", "--tasks", "2", "--out", str(tmp_path / "demo"))
    assert result.exit_code == 0, result.output
    assert "ema-merge" in result.output and (tmp_path / "demo" / "trajectory.png").exists()


def test_transfer_metrics_by_hand():
    from emulate.continual.metrics import transfer

    start = [0.1, 0.2, 0.0]
    matrix = [[0.9, 0.3, 0.1], [0.6, 0.8, 0.2], [0.5, 0.7, 0.9]]
    out = transfer(start, matrix)
    assert out["forgetting"] == pytest.approx(((0.9 - 0.5) + (0.8 - 0.7)) / 2)
    assert out["bwt"] == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)
    assert out["fwt"] == pytest.approx(((0.3 - 0.2) + (0.2 - 0.0)) / 2)


def test_run_json_carries_the_matrix_and_transfer(continual_data):
    from emulate.continual.stream import RunConfig, run_stream

    world, data = continual_data
    r = run_stream(world, RunConfig("finetune", tasks=3, steps=10), data)
    matrix, stream = r["matrix"], r["stream"]
    assert len(matrix) == 3 and all(len(row) == 3 for row in matrix)
    sizes = [len(task) for task in stream]
    for row, point in zip(matrix, r["trajectory"], strict=True):
        # every adaptation concept is in the stream with as many test images: the size-weighted
        # mean of a row is that point's KA
        ka = sum(a * n for a, n in zip(row, sizes, strict=True)) / sum(sizes)
        assert ka == pytest.approx(point["ka"], abs=1e-9)
    assert {"forgetting", "bwt", "fwt"} <= set(r)
    assert r["forgetting"] >= -r["bwt"] - 1e-12  # the max over rows includes the diagonal
    u = world.universe
    labels = [len(d.concepts) for d in (*u.adapt, *u.evaluation)]
    assert r["start"]["chance"] == pytest.approx(sum(1 / n for n in labels) / len(labels))


def test_compare_over_seeds_gives_intervals(continual_world, tmp_path):
    from emulate.continual.intervals import t_interval

    out = tmp_path / "seeds"
    args = ["--world", str(continual_world), "--methods", "finetune", "--tasks", "2"]
    args += ["--steps", "5", "--seeds", "0,1", "--out", str(out), "--json"]
    result = _run("compare", *args)
    assert result.exit_code == 0, result.output
    intervals = json.loads(result.stdout)["finetune"]
    finals = [
        json.loads((out / f"seed{s}" / "results.json").read_text())["finetune"]["final"]["ka"]
        for s in (0, 1)
    ]
    ka = intervals["final.ka"]
    assert ka == pytest.approx(t_interval(finals)) and ka["low"] <= ka["mean"] <= ka["high"]
    # two values: mean +- 12.706 * |a - b| / 2
    assert ka["high"] - ka["mean"] == pytest.approx(12.706 * abs(finals[0] - finals[1]) / 2, 1e-3)
    assert {"forgetting", "bwt", "fwt", "final.gm"} <= set(intervals)


def test_retrieval_recall_against_a_loop_and_its_share_of_zs(continual_data):
    import torch

    from emulate.continual.clip import image_embeddings
    from emulate.continual.metrics import evaluate, retrieval

    world, data = continual_data
    clip, r = world.clip(), data.tests.retrieval
    fast = retrieval(clip, r)
    image = image_embeddings(clip, r.images)
    with torch.no_grad():
        text = clip.model.get_text_features(**clip.tokens(r.captions))
    text = torch.nn.functional.normalize(getattr(text, "pooler_output", text), dim=-1)
    sims = (image @ text.T).tolist()
    n = len(r.concepts)
    for k in (1, 5):
        i2t = sum(
            any(
                r.concepts[j] == r.concepts[i]
                for j in sorted(range(n), key=lambda j: -sims[i][j])[:k]
            )
            for i in range(n)
        )
        t2i = sum(
            any(
                r.concepts[i] == r.concepts[j]
                for i in sorted(range(n), key=lambda i: -sims[i][j])[:k]
            )
            for j in range(n)
        )
        assert fast[f"i2t_r{k}"] == pytest.approx(i2t / n)
        assert fast[f"t2i_r{k}"] == pytest.approx(t2i / n)
    point = evaluate(clip, data.tests)
    scores = [point["datasets"][d] for d in data.tests.evaluation]
    scores.append((fast["i2t_r5"] + fast["t2i_r5"]) / 2)
    assert point["zs"] == pytest.approx(sum(scores) / len(scores))
