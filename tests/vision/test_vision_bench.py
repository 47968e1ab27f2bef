"""``emulate vision bench`` on real photographs, in both file layouts and both modes, through
tiny random checkpoints of real families; the interval and the file errors."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from emulate.cli import app
from emulate.vision.bench import summary, wilson
from emulate.vision.benchfile import BenchFileError, is_right, load

runner = CliRunner()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """scikit-image's sample photographs in several modes and sizes, as files."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    Image.fromarray(data.coffee()).resize((300, 200)).save(folder / "coffee.jpg")
    Image.fromarray(data.camera()).save(folder / "camera.png")  # grayscale, 512 x 512
    rgba = np.dstack([data.astronaut()[:96, :160], np.full((96, 160), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    deep = (data.camera()[:64, :64].astype(np.uint16) * 257)
    Image.fromarray(deep).save(folder / "deep.png")  # 16-bit grayscale
    return folder


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def vstar_rows():
    names = ["astronaut.png", "coffee.jpg", "camera.png", "rgba.png", "deep.png"]
    return [{"image": n, "text": "What is the colour of the cup?\n(A) red\n(B) blue\n"
             "Answer with the option's letter from the given choices directly.",
             "label": "A", "category": "direct_attributes" if i % 2 else "relative_position",
             "question_id": i} for i, n in enumerate(names)]


def plain_rows():
    return [{"image": n, "question": "Which is it?", "options": ["a", "b", "c"], "answer": "b"}
            for n in ["astronaut.png", "camera.png", "deep.png"]]


def test_the_wilson_interval_matches_its_known_values():
    assert wilson(0, 10)[0] == 0.0 and wilson(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson(5, 10)
    assert (low, high) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))


def test_summary_counts_by_category():
    rows = [("a", True, True, 1), ("a", False, True, 0), ("b", False, False, 2)]
    result = summary(rows)
    assert result["accuracy"] == pytest.approx(1 / 3) and result["n"] == 3
    assert result["answered"] == pytest.approx(2 / 3)
    assert result["calls_per_question"] == pytest.approx(1.0)
    assert result["by_category"] == {"a": {"accuracy": 0.5, "n": 2}, "b": {"accuracy": 0.0, "n": 1}}


def test_both_layouts_load_with_paths_relative_to_the_file(photos):
    vstar = load(write(photos / "test_questions.jsonl", vstar_rows()))
    assert [i.options for i in vstar][0] == ("red", "blue") and vstar[0].answer == "red"
    assert vstar[1].category == "direct_attributes" and vstar[0].image == photos / "astronaut.png"
    plain = load(write(photos / "plain.jsonl", plain_rows()))
    assert plain[0].answer == "b" and plain[0].letter == "B"
    assert is_right("(A)", vstar[0]) and is_right("red.", vstar[0]) and not is_right("B", vstar[0])
    assert not is_right(None, plain[0])


@pytest.mark.parametrize("family", ["qwen25_checkpoint", "llava_checkpoint"])
@pytest.mark.parametrize("mode", ["direct", "tools"])
@pytest.mark.parametrize("layout", ["vstar", "plain"])
def test_bench_runs_on_real_photographs(request, photos, tmp_path, family, mode, layout):
    rows = vstar_rows() if layout == "vstar" else plain_rows()
    file = write(photos / f"{layout}.jsonl", rows)
    traces = tmp_path / "traces.jsonl"
    model = request.getfixturevalue(family)
    result = runner.invoke(app, ["vision", "bench", "--model", str(model), "--file", str(file),
                                 "--mode", mode, "--max-calls", "1", "--traces", str(traces),
                                 "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["n"] == len(rows) and 0 <= metrics["low"] <= metrics["accuracy"]
    assert metrics["accuracy"] <= metrics["high"] <= 1
    assert sum(c["n"] for c in metrics["by_category"].values()) == len(rows)
    written = [json.loads(line) for line in traces.read_text().splitlines()]
    assert len(written) == len(rows) and all("steps" in t for t in written)
    if mode == "direct":
        assert metrics["calls_per_question"] == 0


@pytest.mark.parametrize(
    "row, message",
    [
        ({"image": "astronaut.png", "question": "q", "options": ["a", "b"]}, "no 'answer'"),
        ({"image": "gone.png", "question": "q", "options": ["a", "b"], "answer": "a"},
         "no file at"),
        ({"image": "astronaut.png", "text": "q\n(A) x\n(B) y", "label": "C"}, "not one of"),
    ],
)
def test_a_bad_line_names_its_number_and_field(photos, tmp_path, row, message):
    file = write(tmp_path / "bad.jsonl", [plain_rows()[0], row])
    for name in ("astronaut.png",):
        (tmp_path / name).write_bytes((photos / name).read_bytes())
    with pytest.raises(BenchFileError, match=message) as error:
        load(file)
    assert "line 2" in str(error.value)


def test_a_folder_that_is_no_checkpoint_is_one_clear_error(photos, tmp_path):
    file = write(photos / "plain.jsonl", plain_rows())
    result = runner.invoke(app, ["vision", "bench", "--model", str(tmp_path), "--file",
                                 str(file), "--json"])
    assert result.exit_code == 2 and "error:" in result.output
    assert "Traceback" not in result.output
