import pytest

from emulate import FormulaError, disalign, downscale, mix, parse_formula, upscale


@pytest.mark.parametrize(
    "text, expected",
    [
        ("large + 1.0*(chat_small - small)", {"large": 1.0, "chat_small": 1.0, "small": -1.0}),
        ("1.5*base - 0.5*aligned", {"base": 1.5, "aligned": -0.5}),
        ("-(a - 2*b)/2", {"a": -0.5, "b": 1.0}),
        ("a + b - b", {"a": 1.0, "b": 0.0}),
        ("2*(3*(a))", {"a": 6.0}),
        ("a + 7", {"a": 1.0}),
    ],
)
def test_linear_reduction(text, expected):
    assert parse_formula(text) == pytest.approx(expected)


def test_parameters_stand_for_numbers():
    weights = parse_formula("large + beta*(chat - small)", parameters={"beta": 1.5})
    assert weights == {"large": 1.0, "chat": 1.5, "small": -1.5}


@pytest.mark.parametrize(
    "text, message",
    [
        ("a * b", "product of two model terms"),
        ("a / b", "dividing by a model term"),
        ("a + ", "syntax error"),
        ("", "empty"),
        ("   ", "empty"),
        ("a - a", "all weights in the formula are zero"),
        ("3 + 4", "no model terms"),
        ("a ** 2", "operator Pow"),
        ("f(a)", "Call is not allowed"),
        ("a.b", "Attribute is not allowed"),
        ("a / 0", "division by zero"),
        ("'a'", "unexpected literal"),
        ("__import__('os')", "Call is not allowed"),
    ],
)
def test_rejected_formulas(text, message):
    with pytest.raises(FormulaError, match=message):
        parse_formula(text)


def test_unknown_name_points_at_it():
    with pytest.raises(FormulaError) as info:
        parse_formula(
            "large + 1.0*(chat_smal - small)", known_names=["large", "chat_small", "small"]
        )
    message = str(info.value)
    assert "unknown term 'chat_smal'" in message and "chat_small" in message
    # The caret sits under the offending name.
    formula_line, caret_line = message.splitlines()[-2:]
    assert formula_line.strip()[caret_line.index("^") - 2 :].startswith("chat_smal")


def test_presets_write_formulas():
    assert parse_formula(upscale("L", "s_chat", "s", beta=2)) == {"L": 1, "s_chat": 2, "s": -2}
    assert parse_formula(downscale("s", "L_chat", "L")) == {"s": 1, "L_chat": 1, "L": -1}
    mixed = parse_formula(mix("L", "s", {"helpful": 0.25, "harmless": 0.75}))
    assert mixed == pytest.approx({"L": 1, "helpful": 0.25, "s": -1.0, "harmless": 0.75})
    assert parse_formula(disalign("base", "chat", 0.5)) == {"base": 1.5, "chat": -0.5}
    with pytest.raises(FormulaError, match="alpha must be >= 0"):
        disalign("base", "chat", -1)
