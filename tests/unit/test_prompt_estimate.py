"""Prompt estimates in tokens (a model family's bundled tokenizer) next to bytes: still upper
bounds of what the provider counts, and closer."""

from __future__ import annotations

import json
from typing import Any

import pytest
import quicktok

from configsvc.budgets.payloads import SetBudget
from configsvc.errors import InvalidRequest
from holdfast.dialects import estimate, openai_chat, openai_embeddings

CHAT = openai_chat.DIALECT
EMBED = openai_embeddings.DIALECT


@pytest.fixture(scope="module", autouse=True)
def tokenizers() -> None:
    assert estimate.load("gpt-4o") and estimate.load("gpt-4")  # bundled: no download


def openai_count(model: str, messages: list[dict[str, str]]) -> int:
    """OpenAI's documented count: 3 per message, each string value's tokens, 1 per name, 3 for
    the reply's priming (the cookbook's ``num_tokens_from_messages``)."""
    name = estimate.encoding_for(model)  # tiktoken's families (quicktok takes gpt-4.1 for gpt-4)
    assert name is not None
    enc = quicktok.get_encoding(name)
    total = 3
    for m in messages:
        total += 3 + sum(len(enc.encode(v)) for v in m.values())
        total += 1 if "name" in m else 0
    return total


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "request number 7, tell me a story"}],
        [
            {"role": "system", "content": "You are terse.\n\nAnswer in French."},
            {"role": "user", "name": "ann", "content": "¿Qué tal? 日本語 🚀 " * 20},
            {"role": "assistant", "content": "def f(x):\n    return x ** 2\n" * 5},
        ],
    ],
)
@pytest.mark.parametrize("model", ["gpt-4o-mini", "openai/gpt-4.1", "gpt-4-turbo", "o3-mini"])
def test_tokens_bound_the_documented_count_and_undercut_bytes(
    model: str, messages: list[dict[str, str]]
) -> None:
    request = CHAT.parse({"model": model, "messages": messages})
    tokens = request.prompt_estimate("tokens")
    exact = openai_count(model, messages)
    assert exact <= tokens <= exact + len(messages)  # one spare token per message
    assert tokens < request.prompt_estimate("bytes")


def test_what_is_not_text_stays_in_bytes() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 400}}
    calls = [{"id": "c1", "function": {"name": "f"}}]
    response_format = {"type": "json_schema", "json_schema": {"name": "x"}}
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "look"}, image]},
        {"role": "assistant", "tool_calls": calls},
    ]
    body: dict[str, Any] = {
        "model": "gpt-4o",
        "messages": messages,
        "tools": tools,
        "response_format": response_format,
    }
    tokens = CHAT.parse(body).prompt_estimate("tokens")
    in_bytes = (
        estimate.json_bytes(tools)
        + estimate.json_bytes(image)
        + estimate.json_bytes({"tool_calls": calls})
        + estimate.json_bytes(response_format)
    )
    assert tokens > in_bytes  # plus the text's tokens and the framing
    assert CHAT.parse(body).prompt_estimate("bytes") >= estimate.json_bytes(messages)


def test_other_models_and_broken_text_fall_back_to_bytes() -> None:
    messages = [{"role": "user", "content": "hello there"}]
    for model in ("claude-3-5-sonnet", "model-one", "llama-3.1-8b", "gpt-40"):
        request = CHAT.parse({"model": model, "messages": messages})
        assert request.prompt_estimate("tokens") == request.prompt_estimate("bytes")
    lone = CHAT.parse({"model": "gpt-4o", "messages": [{"role": "user", "content": "\ud800x"}]})
    assert lone.prompt_estimate("tokens") >= len("\ud800x".encode("utf-8", "surrogatepass"))
    assert estimate.encoding_for("ft:gpt-4o-mini:acme::abc") == "o200k_base"
    assert estimate.encoding_for("text-embedding-3-small") == "cl100k_base"
    assert estimate.encoding_for("gpt-4o-realtime-preview") == "o200k_base"


def test_embeddings_count_texts_and_token_ids_exactly() -> None:
    enc = quicktok.get_encoding("cl100k_base")
    texts = ["the quick brown fox", "jumps over 13 lazy dogs"]
    model = "text-embedding-3-small"
    body = {"model": model, "input": texts}
    assert EMBED.parse(body).prompt_estimate("tokens") == sum(len(enc.encode(t)) for t in texts)
    ids = {"model": model, "input": [[1, 2, 3], [4, 5]]}
    assert EMBED.parse(ids).prompt_estimate("tokens") == 5
    assert EMBED.parse({"model": model, "input": [7, 8, 9]}).prompt_estimate("tokens") == 3
    unknown = {"model": "nomic-embed", "input": texts}
    assert EMBED.parse(unknown).prompt_estimate("tokens") == len(
        json.dumps(texts, separators=(",", ":")).encode()
    )


def test_budget_bodies_refuse_bad_queue_settings() -> None:
    ok = SetBudget.parse(b'{"tokens": 5, "window": "day", "queue_timeout": 2.5, "fit_cap": 8}')
    assert (ok.queue_timeout, ok.fit_cap) == (2.5, 8)
    assert SetBudget.parse(b'{"tokens": 5, "window": "day"}').queue_timeout == 10.0
    for bad in ('"queue_timeout": -1', '"queue_timeout": 1e9', '"queue_timeout": true',
                '"fit_cap": -3', '"fit_cap": 1.5'):  # fmt: skip
        with pytest.raises(InvalidRequest):
            SetBudget.parse(f'{{"tokens": 5, "window": "day", {bad}}}'.encode())
