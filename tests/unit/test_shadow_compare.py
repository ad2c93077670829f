"""Shadow comparison: similarity, tool agreement, SSE capture and the budget (pure, no loop)."""

from __future__ import annotations

import json

import pytest

from holdfast.compare import (
    MAX_WORDS,
    Answer,
    answer_from_completion,
    canonical_arguments,
    compare,
    similarity,
    tools_agree,
)
from sidecar.shadow.book import ShadowBook, TokenBucket


def test_identical_and_empty_texts_are_fully_similar() -> None:
    assert similarity("the quick brown fox", "the quick brown fox") == 1.0
    assert similarity("", "") == 1.0
    assert similarity("  \n", "") == 1.0
    assert similarity("word", "") == 0.0


def test_similarity_is_the_word_level_sequence_ratio() -> None:
    # 3 matching words of 4 + 4: 2*3/8.
    assert similarity("a b c d", "a b c e") == pytest.approx(0.75)
    # Whitespace differences are not differences; one word swapped out of two halves it.
    assert similarity("hello   world\n", "hello world") == 1.0
    assert similarity("hello world", "hello there") == pytest.approx(0.5)
    # Order matters: a reversed text matches only one block.
    assert similarity("one two three", "three two one") == pytest.approx(2 * 1 / 6)


def test_similarity_looks_at_the_first_2000_words_only() -> None:
    same = " ".join(f"w{i}" for i in range(MAX_WORDS))
    assert similarity(same + " tail-a x y z", same + " tail-b") == 1.0
    assert similarity(same[:-5], same) < 1.0


def test_tool_agreement_ignores_key_order_spacing_and_call_order() -> None:
    a = Answer("", (("lookup", canonical_arguments('{"b": 1, "a": [1, 2]}')), ("ping", "{}")))
    b = Answer(
        "",
        (
            ("ping", canonical_arguments("{ }")),
            ("lookup", canonical_arguments('{"a":[1,2],"b":1}')),
        ),
    )
    assert tools_agree(a, b)
    c = Answer("", (("lookup", canonical_arguments('{"a":[2,1],"b":1}')), ("ping", "{}")))
    assert not tools_agree(a, c)
    # The same call twice is not the same as once (multiset, not set).
    assert not tools_agree(Answer("", (("ping", "{}"),)), Answer("", (("ping", "{}"),) * 2))
    assert canonical_arguments("{not json") == "{not json"


def test_text_only_answers_agree_but_are_not_tool_samples() -> None:
    result = compare(Answer("a b"), Answer("a c"))
    assert result.tools_agree and not result.tool_sample
    assert result.similarity == pytest.approx(0.5)
    mixed = compare(Answer("text"), Answer("", (("ping", "{}"),)))
    assert mixed.tool_sample and not mixed.tools_agree


def test_answer_from_a_completion_body() -> None:
    body = {
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "find", "arguments": '{"q": "x", "n": 2}'},
                        }
                    ],
                },
            },
            {"index": 1, "message": {"content": "second choice is ignored"}},
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12},
    }
    answer = answer_from_completion(json.dumps(body).encode())
    assert answer == Answer("", (("find", '{"n":2,"q":"x"}'),), 7, 5)
    no_usage = answer_from_completion({"choices": [{"message": {"content": "hi"}}]})
    assert no_usage == Answer("hi", (), 0, 0)
    for bad in (b"not json", b"[]", b'{"choices": []}', b'{"choices": [{"x": 1}]}'):
        with pytest.raises(ValueError):
            answer_from_completion(bad)


def test_token_bucket_refills_continuously_and_carries_debt() -> None:
    now = [0.0]
    bucket = TokenBucket(60, clock=lambda: now[0])
    assert bucket.available() and bucket.level() == 60
    bucket.charge(90)
    assert not bucket.available()
    now[0] = 29.0  # one token a second: -30 + 29
    assert not bucket.available()
    now[0] = 31.0
    assert bucket.available()
    now[0] = 1000.0
    assert bucket.level() == 60  # never more than a minute's worth saved


def test_book_adds_up_per_primary_shadow_and_epoch() -> None:
    book = ShadowBook()
    key = ("r1", "r2", 100.0)
    p, s = Answer("a b", (), 3, 2), Answer("a c", (("t", "{}"),), 4, 6)
    book.compared(key, compare(p, s), p, s, 0.1, 0.3)
    book.compared(key, compare(p, p), p, p, 0.2, 0.2)
    book.skipped(key)
    book.error(("r1", "r2", 200.0))
    old, new = book.snapshot()
    assert (old.epoch, new.epoch) == (100.0, 200.0)
    assert old.samples == 2 and old.similarity_sum == pytest.approx(1.5)
    assert old.similarity_min == pytest.approx(0.5)
    # text vs tool call: a tool sample that disagrees; text vs same text: agrees, no tool sample
    assert (old.tool_samples, old.tool_agree) == (1, 1)
    assert (old.primary_prompt_tokens, old.shadow_completion_tokens) == (6, 8)
    assert old.shadow_latency_ms_sum == pytest.approx(500.0)
    assert (old.skipped, old.shadow_errors) == (1, 0)
    assert (new.samples, new.shadow_errors) == (0, 1)
