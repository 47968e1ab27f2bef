"""The continual system's bad inputs, fed through `emulate continual ...` and the Python API:
each answers a clear error naming the argument or folder and what to do, never a traceback.

Nothing here builds or trains: cases that need a world use the session's micro world, and the
training loop is patched to fail loudly, so a command that would train before refusing fails."""

from __future__ import annotations

import math
import shutil

import pytest
from cli_refusals import refused, says
from PIL import Image

from emulate.common.errors import EmulateError

NO_WORLD = ("holds no built continual world (no readable manifest.json); build it: "
            "`emulate continual build --out")
EITHER = "give either --world DIR (a built world) or --data ROOT with --model M"


@pytest.fixture
def tmp(tmp_path, continual_world):
    """Bad folders and files, a world with a part missing, and a tiny real-data layout."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "text.txt").write_text("not a world\n")
    for part in ("universe.json", "clip"):
        broken = shutil.copytree(continual_world, tmp_path / f"no-{part}")
        target = broken / part
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    for image in ("stream/a/1.png", "stream/a/2.png", "stream/b/1.png", "stream/b/2.png",
                  "eval/a/1.png"):
        (tmp_path / "real" / image).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), "red").save(tmp_path / "real" / image)
    (tmp_path / "noeval" / "stream").mkdir(parents=True)
    return tmp_path


@pytest.fixture
def no_training(monkeypatch):
    """Training, where a bad input should have stopped the command first, fails loudly."""
    import emulate.continual.realstream as realstream
    import emulate.continual.stream as stream

    def trained(*args, **kwargs):
        raise AssertionError("trained before the bad input was refused")

    for module in (stream, realstream):
        monkeypatch.setattr(module, "run_tasks", trained)


def case(args, *message, xfail=None, id=None):
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(args, message, marks=marks, id=id)


RUN = ["run", "--world", "{world}", "--json"]
REAL = ["run", "--data", "{tmp}/real", "--model", "{world}/clip", "--json", "--tasks", "1"]
COMPARE = ["compare", "--world", "{world}", "--methods", "finetune", "--out", "{tmp}/cmp"]
MIX = "is not three finite non-negative numbers P,D,B (pretraining, current task, buffer)"
WEIGHT = "is not in (0, 1]; it is the share (or scale) the new task gets in a merge"
BUDGET = "is not a positive multiple of the default per-task compute; give e.g. --budget 0.25"

CASES = [
    # building and finding worlds
    case(["build", "--size", "huge", "--out", "{tmp}/b"], "unknown world size 'huge'",
         "choose one of micro, default", id="build-unknown-size"),
    case(["build", "--size", "micro", "--out", "{tmp}/text.txt"],
         "is a file, not a build folder; remove it or choose another --out", id="build-out-file"),
    case(["build", "--size", "micro", "--seed", "-1", "--out", "{tmp}/b"],
         "--seed -1 is negative; give a seed of 0 or more", id="build-seed-negative"),
    case(["run", "--world", "{tmp}/nowhere", "--json"], "nowhere", NO_WORLD, id="run-no-world"),
    case(["run", "--world", "{tmp}/empty", "--json"], "empty", NO_WORLD, id="run-empty-folder"),
    case(["run", "--world", "{tmp}/text.txt", "--json"], NO_WORLD, id="run-world-is-a-file"),
    case(["run", "--world", "{tmp}/no-universe.json", "--json"], "cannot be used",
         "universe.json is missing", "rebuild it: `emulate continual build --out",
         id="run-world-without-universe"),
    case(["run", "--world", "{tmp}/no-clip", "--json"], "clip/config.json is missing",
         "rebuild it", id="run-world-without-clip"),
    case(["compare", "--world", "{tmp}/nowhere", *COMPARE[3:]], NO_WORLD, id="compare-no-world"),
    case(["run", "--json"], EITHER, id="run-neither-world-nor-data"),
    case(["run", "--world", "{world}", "--data", "{tmp}/real", "--json"], EITHER, "not both",
         id="run-world-and-data"),
    case(["run", "--data", "{tmp}/real", "--json"], EITHER, id="run-data-without-model"),
    # real data
    case(["run", "--data", "{tmp}/real", "--model", "{tmp}/nowhere", "--json"],
         "nowhere holds no CLIP checkpoint (no config.json)", "open_clip:ARCH[:FILE]",
         id="real-model-missing"),
    case(["run", "--data", "{tmp}/real", "--model", "open_clip:bogus", "--json"],
         "'bogus' is no open_clip architecture", "open_clip.list_models()",
         id="real-unknown-open-clip-arch"),
    case(["run", "--data", "{tmp}/empty", "--model", "{world}/clip", "--json"],
         "empty has no stream/ folder; lay out", id="real-data-empty"),
    case(["run", "--data", "{tmp}/noeval", "--model", "{world}/clip", "--json"],
         "noeval has no eval/ folder", id="real-data-without-eval"),
    case([*REAL, "--method", "joint"], "joint training is run on a world only",
         id="real-joint"),
    case([*REAL, "--ordering", "frequency"], "ordering 'frequency' needs the synthetic world",
         "real data takes --ordering random", id="real-ordering"),
    case([*REAL, "--replay", "{tmp}/nowhere"],
         "nowhere is not a directory of images, shards or a saved dataset",
         id="real-replay-missing"),
    case([*REAL, "--mix", "1,0,0"], "--mix gives every sample to replay but no --replay PATH",
         id="real-mix-all-replay"),
    case([*REAL[:-1], "5"], "5 tasks asked for but the stream has only 2 concepts",
         "use --tasks 2 or fewer", id="real-too-many-tasks"),
    case([*RUN, "--replay", "{tmp}/real"], "--replay go with --data ROOT (real data) only",
         "drop --replay, or give --data instead of --world", id="run-world-with-replay"),
    case([*RUN, "--model", "{world}/clip"], "--model go with --data ROOT (real data) only",
         "drop --model", id="run-world-with-model"),
    case([*RUN, "--model", "{world}/clip", "--replay", "{tmp}/real"],
         "--model and --replay go with --data", id="run-world-with-model-and-replay"),
    # methods, orderings, schedules, merge rules
    case([*RUN, "--method", "sgd"], "unknown method 'sgd'; choose one of finetune, lora",
         id="unknown-method"),
    case([*RUN, "--ordering", "alphabetical"], "unknown ordering", id="unknown-ordering"),
    case([*RUN, "--schedule", "linear"], "unknown schedule", id="unknown-schedule"),
    case([*RUN, "--method", "zs-merge", "--merge", "average"], "unknown merge rule",
         id="unknown-merge-rule"),
    case([*RUN, "--method", "ema-merge", "--merge", "task-arithmetic"], "coincides",
         id="merge-rule-coincides"),
    # counts, steps, budgets, weights, seeds
    case([*RUN, "--tasks", "0"], "--tasks must be at least 1, got 0", id="tasks-0"),
    case([*RUN, "--tasks", "-1"], "--tasks must be at least 1, got -1", id="tasks-negative"),
    case([*RUN, "--tasks", "99"], "99 tasks asked for", "use --tasks 12 or fewer",
         id="tasks-too-many"),
    case([*RUN, "--steps", "0"], "--steps 0 buys no training; give at least 1",
         id="steps-0"),
    case([*RUN, "--steps", "-5"], "--steps -5 buys no training", id="steps-negative"),
    case([*RUN, "--method", "ewc", "--steps", "2"], "raise --steps", id="ewc-steps-too-few"),
    case([*RUN, "--method", "ewc", "--fisher-samples", "0"], "--fisher-samples 0 takes no sample",
         "give at least 1", id="fisher-samples-0"),
    case([*RUN, "--method", "ewc", "--fisher-samples", "-3"], "--fisher-samples -3",
         id="fisher-samples-negative"),
    case([*RUN, "--budget", "0"], "--budget 0.0", BUDGET, id="budget-0"),
    case([*RUN, "--budget", "-1"], "--budget -1.0", BUDGET, id="budget-negative"),
    case([*RUN, "--budget", "nan"], "--budget nan", BUDGET, id="budget-nan"),
    case([*RUN, "--budget", "0.001", "--steps", "20"], "buys no full fine-tuning step",
         "raise --budget or --steps", id="budget-buys-nothing"),
    case([*RUN, "--merge-weight", "0"], "--merge-weight 0.0", WEIGHT, id="merge-weight-0"),
    case([*RUN, "--merge-weight", "-0.5"], "--merge-weight -0.5", WEIGHT, id="merge-weight-neg"),
    case([*RUN, "--merge-weight", "nan"], "--merge-weight nan", WEIGHT, id="merge-weight-nan"),
    case([*RUN, "--method", "ema-merge", "--merge-weight", "7"], "--merge-weight 7.0", WEIGHT,
         id="merge-weight-7"),
    case([*RUN, "--seed", "-1", "--tasks", "1", "--steps", "1"],
         "--seed -1 is negative; give a seed of 0 or more", id="run-seed-negative"),
    # mixtures
    case([*RUN, "--mix", "a,b,c"], "mixture 'a,b,c'", MIX, "e.g. --mix 0.34,0.33,0.33",
         id="mix-not-numbers"),
    case([*RUN, "--mix", "1,0"], "mixture '1,0'", MIX, id="mix-two-shares"),
    case([*RUN, "--mix", ""], "mixture ''", MIX, id="mix-empty"),
    case([*RUN, "--mix", "-0.5,1,0.5"], MIX, id="mix-negative"),
    case([*RUN, "--mix", "inf,0,0"], MIX, id="mix-inf"),
    case([*RUN, "--mix", "nan,0.5,0.5"], MIX, id="mix-nan"),
    case([*RUN, "--mix", "0.5,0.5,0.5"], "mixture '0.5,0.5,0.5' sums to 1.5, not 1",
         "give shares of one batch", id="mix-sum-over-1"),
    case([*COMPARE, "--mix", "1,1,1"], "sums to 3, not 1", id="compare-mix-sum"),
    # compare
    case([*COMPARE[:3], "--methods", "", *COMPARE[5:]], "--methods is empty",
         "give e.g. --methods finetune,lora,ema-merge", id="compare-methods-empty"),
    case([*COMPARE[:3], "--methods", " , ", *COMPARE[5:]], "--methods is empty",
         id="compare-methods-blank"),
    case([*COMPARE[:3], "--methods", "finetune,bogus", *COMPARE[5:]], "unknown method 'bogus'",
         id="compare-unknown-method"),
    case([*COMPARE, "--seeds", "a"], "--seeds 'a' is not distinct integers",
         "give e.g. --seeds 0,1,2", id="seeds-not-integers"),
    case([*COMPARE, "--seeds", "0,0"], "--seeds '0,0' is not distinct integers",
         id="seeds-repeated"),
    case([*COMPARE, "--seeds", ""], "--seeds '' is not distinct integers", id="seeds-empty"),
    case([*COMPARE, "--seeds", "1.5"], "--seeds '1.5'", id="seeds-fraction"),
    case([*COMPARE, "--seeds", "-1,0", "--tasks", "1", "--steps", "1"], "--seed -1 is negative",
         id="seeds-negative"),
    case([*COMPARE, "--seed", "-2", "--tasks", "1", "--steps", "1"], "--seed -2 is negative",
         id="compare-seed-negative"),
    case([*COMPARE, "--tasks", "0"], "--tasks must be at least 1", id="compare-tasks-0"),
    case([*COMPARE[:-1], "{tmp}/text.txt", "--tasks", "1", "--steps", "1"], "text.txt",
         "is a file, not a folder; remove it or choose another --out", id="compare-out-is-a-file"),
    case([*COMPARE[:-1], "{tmp}/text.txt", "--seeds", "0,1", "--tasks", "1", "--steps", "1"],
         "text.txt", "is a file, not a folder", id="compare-seeds-out-is-a-file"),
    # demo
    case(["demo", "--size", "huge", "--out", "{tmp}/demo"], "unknown world size 'huge'",
         id="demo-unknown-size"),
]


@pytest.mark.parametrize(("args", "message"), CASES)
def test_the_command_line_refuses(args, message, continual_world, tmp, no_training):
    filled = [a.format(world=continual_world, tmp=tmp) for a in args]
    says(refused(["continual", *filled]), *message)


@pytest.mark.parametrize(("args", "message"), [
    (["--tasks", "0"], "--tasks must be at least 1"),
    (["--seed", "-1"], "--seed -1 is negative"),
    (["--out", "{tmp}/text.txt"], "is a file, not a folder; remove it or choose another --out"),
], ids=["tasks-0", "seed-negative", "out-is-a-file"])
def test_the_demo_refuses_its_arguments_before_building(args, message, tmp_path, monkeypatch):
    import emulate.continual.pretrain as pretrain

    def built(*args, **kwargs):
        raise AssertionError("built a world before the bad input was refused")

    monkeypatch.setenv("EMULATE_HOME", str(tmp_path))
    monkeypatch.setattr(pretrain, "build_world", built)
    (tmp_path / "text.txt").write_text("not a folder\n")
    filled = [a.format(tmp=tmp_path) for a in args]
    text = refused(["continual", "demo", "--size", "micro", "--out", tmp_path / "demo", *filled])
    says(text, message)


def _api_cases():
    from emulate.continual.commands import parse_seeds
    from emulate.continual.mixture import Mixture
    from emulate.continual.pretrain import build_world, load_world
    from emulate.continual.realstream import run_files
    from emulate.continual.stream import RunConfig

    def check(**fields):
        return lambda w, t: RunConfig(**fields).check()

    return [
        pytest.param(lambda w, t: Mixture.parse("nan,0.5,0.5"), MIX, id="mixture-nan"),
        pytest.param(lambda w, t: Mixture.parse("0.5,0.5,0.5"), "not 1", id="mixture-sum"),
        pytest.param(check(method="sgd"), "unknown method 'sgd'", id="config-method"),
        pytest.param(check(ordering="abc"), "unknown ordering", id="config-ordering"),
        pytest.param(check(steps=0), "--steps 0 buys no training", id="config-steps"),
        pytest.param(check(budget=math.nan), "--budget nan", id="config-budget"),
        pytest.param(check(method="ema-merge", merge_weight=7.0), WEIGHT, id="config-weight"),
        pytest.param(check(fisher_samples=0), "--fisher-samples 0", id="config-fisher"),
        pytest.param(check(seed=-1), "seed -1", id="config-seed"),
        pytest.param(lambda w, t: parse_seeds("0,0"), "not distinct integers", id="seeds"),
        pytest.param(lambda w, t: load_world(t / "nowhere"), NO_WORLD, id="load-missing"),
        pytest.param(lambda w, t: load_world(t / "no-universe.json"), "universe.json is missing",
                     id="load-without-universe"),
        pytest.param(lambda w, t: build_world(t / "b", size="huge"), "unknown world size",
                     id="build-size"),
        pytest.param(lambda w, t: run_files(None, None, None, None, RunConfig()), EITHER,
                     id="run-files-nothing"),
    ]


@pytest.mark.parametrize(("call", "message"), _api_cases())
def test_the_python_api_refuses(call, message, continual_world, tmp):
    with pytest.raises(EmulateError) as raised:
        call(continual_world, tmp)
    assert " ".join(message.split()) in " ".join(str(raised.value).split())
