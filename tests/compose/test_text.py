from tiny_models import make_tokenizer

from emulate.compose.text import TextAssembler


def feed(tokenizer, text, stop):
    assembler = TextAssembler(tokenizer, stop)
    pieces = []
    for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
        pieces.append(assembler.add(token))
        if assembler.stopped:
            break
    pieces.append(assembler.finish())
    return assembler, pieces


def test_deltas_concatenate_to_the_decoded_text():
    tokenizer = make_tokenizer()
    text = "Où est la gare? Ça coûte 5€."
    assembler, pieces = feed(tokenizer, text, [])
    assert "".join(pieces) == text == assembler.text
    assert all("\ufffd" not in p for p in pieces), "partial characters are held back"


def test_stop_string_cuts_and_is_never_streamed():
    tokenizer = make_tokenizer()
    assembler, pieces = feed(tokenizer, "The quick brown fox jumps over", ["brown f"])
    assert assembler.stopped
    assert "".join(pieces) == "The quick "
    assert all("brown" not in p for p in pieces)


def test_text_that_only_resembles_a_stop_is_released():
    tokenizer = make_tokenizer()
    assembler, pieces = feed(tokenizer, "The quick brown dog", ["brown f"])
    assert not assembler.stopped
    assert "".join(pieces) == "The quick brown dog"
