"""Detokenizing, stop sequences and chat templates."""

from __future__ import annotations

import pytest

from inferd.generation.text import Detokenizer, StopMatcher, render_chat


def test_a_character_split_over_two_tokens_waits_for_the_second():
    detok = Detokenizer()
    euro = "€".encode()
    assert detok.feed(b"a" + euro[:1]) == "a"
    assert detok.feed(euro[1:2]) == ""
    assert detok.feed(euro[2:] + b"b") == "€b"
    assert detok.flush() == ""


def test_an_unfinished_character_at_the_end_is_a_replacement_character():
    detok = Detokenizer()
    assert detok.feed("é".encode()[:1]) == ""
    assert detok.flush() == "\ufffd"


def _run(stops, pieces):
    matcher = StopMatcher(stops)
    out = []
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        out.append(text)
        if stopped:
            return "".join(out), True
    return "".join(out) + matcher.flush(), False


@pytest.mark.parametrize(("stops", "pieces", "expected"), [
    (["END"], ["hello E", "N", "D and more"], ("hello ", True)),
    (["END"], ["hello", "END"], ("hello", True)),
    (["\n\n"], ["a\n", "\nb"], ("a", True)),
    (["stop", "top"], ["s", "to", "p"], ("", True)),
    (["xyz"], ["xy", "a"], ("xya", False)),
    (["xyz"], ["abc x"], ("abc x", False)),
    ([], ["anything"], ("anything", False)),
])
def test_stop_sequences_are_found_across_pieces_and_cut_off(stops, pieces, expected):
    assert _run(stops, pieces) == expected


def test_text_that_may_start_a_stop_sequence_is_held_back_until_it_cannot():
    matcher = StopMatcher(["<end>"])
    assert matcher.feed("one <e") == ("one ", False)
    assert matcher.feed("x") == ("<ex", False)


def test_chatml_without_a_template():
    prompt = render_chat(None, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert prompt == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_a_jinja_template_runs_in_a_sandbox():
    pytest.importorskip("jinja2")
    template = "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}{% endfor %}" \
               "{% if add_generation_prompt %}[assistant]{% endif %}"
    assert render_chat(template, [{"role": "user", "content": "Hi"}], bos="<s>") == "<s>[user] Hi[assistant]"
    with pytest.raises(Exception, match="unsafe|access"):
        render_chat("{{ messages.__class__.__mro__ }}{{ ''.__class__.__subclasses__() }}", [])
