"""What the commands check before they load anything: question counts, members, modes."""

import pytest

from emulate.vision.report import MAX_EVAL_QUESTIONS, InputError, check_question, evaluate_member


@pytest.mark.parametrize("n", [-1, 0, MAX_EVAL_QUESTIONS + 1, True])
def test_a_question_count_out_of_range_is_refused_before_the_world_loads(tmp_path, n):
    with pytest.raises(InputError, match="out of range: give 1 to"):
        evaluate_member(tmp_path / "no-world", "tools", "own", n)


@pytest.mark.parametrize(
    ("member", "mode", "message"),
    [("large", "own", "unknown member"), ("tools", "greedy", "unknown mode")],
)
def test_unknown_members_and_modes_are_named(tmp_path, member, mode, message):
    with pytest.raises(InputError, match=message):
        evaluate_member(tmp_path / "no-world", member, mode, 3)


def test_an_empty_question_is_refused():
    with pytest.raises(InputError, match="empty"):
        check_question("  \n")
