"""The vision system's bad inputs, fed through `emulate vision ...` and the Python API: each
answers a clear error naming the argument or file and what to do, never a traceback.

Nothing here builds or trains: cases that need a world use the session's micro world, and the
trainer and the chain synthesis are patched to fail loudly, so a command that would do that work
before refusing fails."""

from __future__ import annotations

import json
import struct
import zlib

import pytest
from cli_refusals import refused, says
from PIL import Image

from emulate.common.errors import EmulateError

NO_WORLD = ("holds no built vision world (no readable manifest.json); build it: "
            "`emulate vision build")


def _png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


@pytest.fixture
def tmp(tmp_path):
    """Bad (and a few good) files a user might point the commands at."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "text.txt").write_text("not an image\n")
    (tmp_path / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\nxx")
    (tmp_path / "bomb.png").write_bytes(_png_header(20000, 20000))
    Image.new("RGB", (32, 32), "red").save(tmp_path / "ok.png")
    (tmp_path / "notmanifest").mkdir()
    (tmp_path / "notmanifest" / "manifest.json").write_text("{}")
    plain = {"image": "ok.png", "question": "What colour?", "options": ["red", "blue"]}
    lines = {"bad.jsonl": "not json\n", "none.jsonl": "",
             "noimage.jsonl": json.dumps({"question": "q"}) + "\n",
             "badanswer.jsonl": json.dumps({**plain, "answer": "green"}) + "\n",
             "lostimage.jsonl": json.dumps({**plain, "image": "gone.png", "answer": "red"}) + "\n",
             "good.jsonl": json.dumps({**plain, "answer": "red"}) + "\n"}
    for name, text in lines.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def case(args, *message, id=None):
    return pytest.param(args, message, id=id)


ASK = ["ask", "What colour is the square?", "--image", "{tmp}/ok.png", "--world", "{world}"]
BENCH = ["bench", "--model", "{world}/tools", "--file", "{tmp}/good.jsonl"]
TRAIN = ["train", "--model", "{world}/aligned", "--data", "{world}/chains", "--out", "{tmp}/t"]

CASES = [
    # worlds: missing, empty, not a vision world, unknown sizes
    case(["build", "--size", "huge", "--out", "{tmp}/b"], "unknown size 'huge'",
         "choose from micro, default", id="build-unknown-size"),
    case(["build", "--size", "micro", "--out", "{tmp}/text.txt"], "is a file, not a build folder",
         "choose another --out", id="build-out-is-a-file"),
    case(["synth", "--world", "{tmp}/nowhere"], "nowhere", NO_WORLD, id="synth-missing-world"),
    case(["eval", "--world", "{tmp}/empty"], "empty", NO_WORLD, id="eval-empty-folder"),
    case(["eval", "--world", "{tmp}/notmanifest"], "the manifest names size None",
         "rebuild the world with `emulate vision build --size micro`", id="eval-not-a-world"),
    case(["ablate", "--world", "{tmp}/nowhere"], NO_WORLD, id="ablate-missing-world"),
    case(["export", "--world", "{tmp}/empty"], NO_WORLD, id="export-empty-folder"),
    case(["demo", "--world", "{tmp}/empty"], NO_WORLD, id="demo-empty-folder"),
    case([*ASK[:4], "--world", "{tmp}/empty"], NO_WORLD, id="ask-empty-folder"),
    # counts
    case(["synth", "--world", "{world}", "--n", "0"], "--n must be at least 1", id="synth-n-0"),
    case(["synth", "--world", "{world}", "--n", "1000000000", "--out", "{tmp}/c"], "--n",
         "out of range",
         id="synth-n-unbounded"),
    case(["build", "--size", "micro", "--seed", "-1", "--out", "{tmp}/b"], "--seed -1",
         id="build-seed-negative"),
    case(["eval", "--world", "{world}", "--n", "-1"], "--n -1 is out of range",
         "give 1 to 100000 held-out questions per kind", id="eval-n-negative"),
    case(["eval", "--world", "{world}", "--n", "0"], "--n 0 is out of range", id="eval-n-0"),
    case(["export", "--world", "{world}", "--n", "0", "--out", "{tmp}/x"], "--n 0 is out of range",
         "give 1 to 100000 per kind", id="export-n-0"),
    case(["demo", "--world", "{world}", "--n", "0"], "--n 0 is out of range", id="demo-n-0"),
    case(["ablate", "--world", "{world}", "--n", "-1"], "--n -1 is out of range",
         id="ablate-n-negative"),
    # members, modes, formats
    case(["eval", "--world", "{world}", "--member", "bogus"], "unknown member 'bogus'",
         "choose direct or tools", id="eval-unknown-member"),
    case(["eval", "--world", "{world}", "--mode", "bogus"], "unknown mode 'bogus'",
         "choose from own, withheld, random, oracle", id="eval-unknown-mode"),
    case([*ASK, "--format", "bogus"], "unknown call format 'bogus'",
         "choose from grammar, deepeyes", id="ask-unknown-format"),
    # the question and the image
    case(["ask", "", *ASK[2:]], "the question is empty; ask something about the image",
         id="ask-empty-question"),
    case(["ask", "   ", *ASK[2:]], "the question is empty", id="ask-blank-question"),
    case(["ask", "what " * 2500, *ASK[2:]], "past the model's 320-token context",
         "ask a shorter question", id="ask-question-too-long"),
    case([*ASK[:3], "{tmp}/gone.png", *ASK[4:]], "no image file at", "gone.png",
         "give the path of an image file", id="ask-missing-image"),
    case([*ASK[:3], "{tmp}/empty", *ASK[4:]], "no image file at", id="ask-image-is-a-folder"),
    case([*ASK[:3], "{tmp}/text.txt", *ASK[4:]], "text.txt is not a readable image",
         id="ask-image-is-text"),
    case([*ASK[:3], "{tmp}/truncated.png", *ASK[4:]], "truncated.png is not a readable image",
         id="ask-truncated-png"),
    case([*ASK[:3], "{tmp}/bomb.png", *ASK[4:]], "bomb.png declares more pixels than is safe",
         "give an image under 67,108,864 pixels", id="ask-decompression-bomb"),
    # caps
    case([*ASK, "--max-calls", "-1"], "max_calls -1 is out of range: give 0 to 32",
         id="ask-max-calls-negative"),
    case([*ASK, "--max-calls", "1000000"], "max_calls 1000000 is out of range: give 0 to 32",
         id="ask-max-calls-huge"),
    case([*ASK, "--max-turns", "0"], "max_turns 0 is out of range: give 1 to 64",
         id="ask-max-turns-0"),
    case([*ASK, "--max-turns", "65"], "max_turns 65 is out of range", id="ask-max-turns-65"),
    case([*ASK, "--max-new-tokens", "0"], "max_new_tokens 0 is out of range: give 1 to 4096",
         id="ask-max-new-tokens-0"),
    case([*ASK, "--max-new-tokens", "5000"], "max_new_tokens 5000 is out of range",
         id="ask-max-new-tokens-huge"),
    # checkpoints
    case([*ASK[:4], "--model", "{tmp}/nowhere"], "nowhere holds no model (no config.json)",
         "give a checkpoint dir", id="ask-missing-model"),
    case([*ASK[:4], "--model", "{tmp}/text.txt"], "text.txt is a file",
         "give the checkpoint's folder", id="ask-model-is-a-file"),
    case(["bench", "--model", "{tmp}/empty", "--file", "{tmp}/good.jsonl"],
         "empty holds no model (no config.json)", id="bench-model-without-config"),
    # benchmark files
    case([*BENCH[:3], "--file", "{tmp}/gone.jsonl"], "no benchmark file at", "gone.jsonl",
         "give a JSONL file of questions", id="bench-missing-file"),
    case([*BENCH[:3], "--file", "{tmp}/empty"], "no benchmark file at",
         id="bench-file-is-a-folder"),
    case([*BENCH[:3], "--file", "{tmp}/bad.jsonl"], "bad.jsonl line 1 is not JSON",
         "give one object per line", id="bench-not-json"),
    case([*BENCH[:3], "--file", "{tmp}/none.jsonl"], "none.jsonl holds no questions",
         id="bench-empty-file"),
    case([*BENCH[:3], "--file", "{tmp}/noimage.jsonl"], "line 1 has no 'image' field",
         id="bench-no-image-field"),
    case([*BENCH[:3], "--file", "{tmp}/lostimage.jsonl"], "field 'image' names gone.png",
         "image paths are relative to the benchmark file", id="bench-image-not-there"),
    case([*BENCH[:3], "--file", "{tmp}/badanswer.jsonl"],
         "field 'answer' 'green' is not one of 'options'", id="bench-answer-not-an-option"),
    case([*BENCH, "--mode", "bogus"], "unknown mode 'bogus'; choose direct or tools",
         id="bench-unknown-mode"),
    case([*BENCH, "--max-calls", "-1"], "max_calls -1 is out of range: give 0 to 32",
         id="bench-max-calls-negative"),
    # training
    case(["train", "--model", "{tmp}/nowhere", *TRAIN[3:]], "nowhere holds no model",
         id="train-missing-model"),
    case([*TRAIN[:3], "--data", "{tmp}/empty", *TRAIN[5:]], "empty holds no chains (no dataset/",
         "give the folder `emulate vision synth` wrote", id="train-data-not-chains"),
    case([*TRAIN, "--max-steps", "-1"], "--max-steps -1 is out of range",
         "give 0 (one epoch) or more", id="train-max-steps-negative"),
    case([*TRAIN, "--member", "bogus"], "unknown --member 'bogus'",
         "choose from direct, focus_area, zoom_in, reuse, all", id="train-unknown-member"),
    case([*TRAIN, "--format", "bogus"], "unknown call format 'bogus'", id="train-unknown-format"),
    case([*TRAIN, "--batch", "0"], "--batch 0 is out of range: give 1 to 4096", id="train-batch-0"),
    case([*TRAIN, "--lr", "-1"], "--lr -1.0 is out of range: give a rate in (0, 1)",
         id="train-lr-negative"),
    case([*TRAIN, "--lr", "nan"], "--lr nan is out of range", id="train-lr-nan"),
    case([*TRAIN, "--seed", "-1"], "--seed -1", id="train-seed-negative"),
    case([*TRAIN[:6], "{tmp}/text.txt", "--max-steps", "1"], "text.txt", "--out",
         id="train-out-is-a-file"),
    case([*ASK, "--max-calls", "1", "--save", "{tmp}/text.txt"], "text.txt", "--save",
         id="ask-save-is-a-file"),
    case([*BENCH, "--traces", "{tmp}/empty"], "empty", "--traces",
         id="bench-traces-is-a-folder"),
    case(["synth", "--world", "{world}", "--n", "2", "--out", "{tmp}/text.txt"], "text.txt",
         "--out", id="synth-out-is-a-file"),
    case(["export", "--world", "{world}", "--n", "1", "--out", "{tmp}/text.txt"], "text.txt",
         "--out",
         id="export-out-is-a-file"),
]


@pytest.fixture
def no_training(monkeypatch):
    """Training or synthesis, where a bad input should have stopped the command first, fails
    loudly."""
    import trl

    import emulate.vision.ablation as ablation
    import emulate.vision.dataset as dataset

    def trained(*args, **kwargs):
        raise AssertionError("trained or synthesized before the bad input was refused")

    monkeypatch.setattr(ablation, "run_jobs", trained)
    monkeypatch.setattr(dataset, "synthesize_dataset", trained)
    monkeypatch.setattr(trl.SFTTrainer, "train", trained)


@pytest.mark.parametrize(("args", "message"), CASES)
def test_the_command_line_refuses(args, message, micro_vision, tmp, no_training):
    filled = [a.format(world=micro_vision, tmp=tmp) for a in args]
    says(refused(["vision", *filled]), *message)


def _api_cases():
    from emulate.vision.bench import bench_file
    from emulate.vision.build import build_world, load_world
    from emulate.vision.export import export_world
    from emulate.vision.images import load_image
    from emulate.vision.report import answer_question, evaluate_member
    from emulate.vision.runtime import check_caps
    from emulate.vision.sft import SFTOptions

    return [
        ("build-size", lambda w, t: build_world(t / "b", size="huge"), "unknown size 'huge'"),
        ("load-missing", lambda w, t: load_world(t / "nowhere"), "holds no built vision world"),
        ("eval-member", lambda w, t: evaluate_member(w, "bogus", "own", None), "unknown member"),
        ("eval-mode", lambda w, t: evaluate_member(w, "tools", "bogus", None), "unknown mode"),
        ("eval-n", lambda w, t: evaluate_member(w, "tools", "own", 0), "--n 0 is out of range"),
        ("export-n", lambda w, t: export_world(w, t / "x", -1), "--n -1 is out of range"),
        ("image-text", lambda w, t: load_image(t / "text.txt"), "is not a readable image"),
        ("image-bomb", lambda w, t: load_image(t / "bomb.png"), "more pixels than is safe"),
        ("caps-calls", lambda w, t: check_caps(33, None), "max_calls 33 is out of range"),
        ("caps-turns", lambda w, t: check_caps(4, 0), "max_turns 0 is out of range"),
        ("caps-not-int", lambda w, t: check_caps(1.5, None), "max_calls must be an integer"),
        ("ask-empty", lambda w, t: answer_question(w / "tools", t / "ok.png", "", t / "s"),
         "the question is empty"),
        ("bench-mode", lambda w, t: bench_file(w / "tools", t / "good.jsonl", "bogus"),
         "unknown mode 'bogus'"),
        ("sft-batch", lambda w, t: SFTOptions(batch=0).check(), "--batch 0 is out of range"),
        ("sft-member", lambda w, t: SFTOptions(member="bogus").check(), "unknown --member"),
    ]


@pytest.mark.parametrize(("call", "message"), [pytest.param(c, m, id=i) for i, c, m in
                                                _api_cases()])
def test_the_python_api_refuses(call, message, micro_vision, tmp):
    with pytest.raises(EmulateError) as raised:
        call(micro_vision, tmp)
    assert message in str(raised.value)
