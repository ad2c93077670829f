"""Provider and client JSON through the bounded parser: hostile input yields None / refusals."""

from __future__ import annotations

import pytest

from configsvc.errors import InvalidRequest
from configsvc.http.payloads import parse_object
from configsvc.releases.probe import answer_problem as _problem
from holdfast.compare import AnswerError, answer_from_completion, canonical_arguments
from holdfast.dialects import openai_chat, openai_embeddings
from holdfast.json_limits import REFUSED, provider_json

DEEP = b"[" * 200_000 + b"]" * 200_000
HUGE = b'{"usage": {"completion_tokens": ' + b"9" * 5000 + b"}}"
SURROGATE = b'{"choices": [{"message": {"content": "\\uD800 x"}}]}'


@pytest.mark.parametrize("raw", [DEEP, HUGE, SURROGATE, b"NaN", b"\xff\xfe", b"{"])
def test_provider_json_refuses_and_counts(raw: bytes) -> None:
    before = REFUSED["unit"]
    assert provider_json(raw, "unit") is None
    assert REFUSED["unit"] == before + 1


def test_provider_json_keeps_good_json_and_paired_surrogates() -> None:
    assert provider_json(b'{"a": "\\ud83d\\ude00"}', "unit") == {"a": "\U0001f600"}
    assert provider_json(b"[" * 64 + b"]" * 64, "unit") is not None


@pytest.mark.parametrize("raw", [DEEP, HUGE, SURROGATE])
def test_filters_never_raise_on_hostile_answers(raw: bytes) -> None:
    for dialect in (openai_chat.DIALECT, openai_embeddings.DIALECT):
        answer = dialect.decode_body(raw)  # what budgets, contracts, signals and shadow read
        assert answer is None or (answer.usage is None and answer.completion_estimate == 0)
    decoder = openai_chat.DIALECT.stream_decoder()
    view = decoder.feed(b"data: " + raw + b"\n\n")
    assert view.usage is None and view.content == 0 and not view.calls and not view.error
    with pytest.raises(AnswerError):
        answer_from_completion(raw)
    assert canonical_arguments(raw.decode("utf-8", "replace")) == raw.decode("utf-8", "replace")
    if raw is not SURROGATE:  # the probe reads no text: a lone surrogate does not matter
        assert "not a JSON object" in _problem(200, raw)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b'{"a": ' + b"[" * 100 + b"]" * 100 + b"}", "deeper than 64"),
        (b'{"a": ' + DEEP + b"}", "deeper than 64"),
        (b'{"a": "\\udc00"}', "surrogate"),
        (b'{"a": Infinity}', "not valid JSON: Infinity is not JSON"),
        (b'{"a": 1e999}', "not valid JSON: number is infinity"),
    ],
)
def test_configsvc_bodies_bounded(raw: bytes, words: str) -> None:
    with pytest.raises(InvalidRequest, match=words):
        parse_object(raw, frozenset({"a"}))


def test_probe_refuses_redirects() -> None:
    assert "redirects are never followed" in _problem(302, b"")
