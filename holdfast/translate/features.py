"""What an agent's request uses that a translation may not carry, read from its top-level fields
(cheap enough for every request: a few dict lookups, a scan of the tools).

Each dialect has its catalogue; a pair (holdfast.translate.pairs) names the features it refuses.
The sidecar counts the features of the requests it serves (``HealthSnapshot.traffic``), so that
configsvc can refuse, before a route change, a release whose provider cannot take what the
agent's traffic uses; the same predicates refuse a single request at translation time. Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from holdfast.translate.fields import as_dict, as_list


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    param: str  # the agent's field, named in a refusal
    what: str  # for a person: what the request asks for
    used: Callable[[dict[str, Any]], bool]
    # The top-level fields the predicate reads ((): ``param`` alone): a request without any of
    # them cannot use the feature, so its predicate is never asked (see ``used`` below).
    fields: tuple[str, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        return self.fields or (self.param,)


def _present(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda body: body.get(name) is not None


def _true(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda body: body.get(name) is True


def _nonzero(*names: str) -> Callable[[dict[str, Any]], bool]:
    return lambda body: any(body.get(n) not in (None, 0, 0.0) for n in names)


def _above(name: str, limit: float) -> Callable[[dict[str, Any]], bool]:
    def used(body: dict[str, Any]) -> bool:
        value = body.get(name)
        return isinstance(value, int | float) and not isinstance(value, bool) and value > limit

    return used


def _tier(*fine: str) -> Callable[[dict[str, Any]], bool]:
    return lambda body: body.get("service_tier") not in (None, *fine)


def _tool_types(*fine: str) -> Callable[[dict[str, Any]], bool]:
    default = fine[0]

    def used(body: dict[str, Any]) -> bool:
        tools = body.get("tools")
        if type(tools) is not list:
            return False
        # a plain loop, no generator: most requests declare tools, and pay this
        for tool in tools:  # noqa: SIM110
            if type(tool) is dict and tool.get("type", default) not in fine:
                return True
        return False

    return used


def _chat_audio(body: dict[str, Any]) -> bool:
    return body.get("audio") is not None or "audio" in as_list(body.get("modalities"))


def _json_format(body: dict[str, Any]) -> bool:
    return as_dict(body.get("response_format")).get("type") in ("json_object", "json_schema")


def _thinking(body: dict[str, Any]) -> bool:
    """Thinking the agent would be shown, or was promised a budget for. Adaptive thinking whose
    display is omitted is not: the model may think or not, and the agent sees none of it --
    which is what a provider's hidden reasoning (or none) gives (Claude Code asks for it)."""
    thinking = as_dict(body.get("thinking"))
    kind = thinking.get("type")
    if kind == "adaptive" and thinking.get("display") == "omitted" and len(thinking) == 2:
        return False
    return kind not in (None, "disabled")


# Context edits that change nothing a translation can carry: clearing thinking blocks from
# earlier turns (a translated conversation has none: they are refused, m2c.thinking).
NO_OP_EDITS: Final = ("clear_thinking_",)


def _context_management(body: dict[str, Any]) -> bool:
    value = body.get("context_management")
    if value is None:
        return False
    cm = as_dict(value)
    edits = cm.get("edits")
    if set(cm) - {"edits"} or not isinstance(edits, list) or not edits:
        return True  # a shape this module has not learnt: judged as used
    for raw in edits:
        kind = as_dict(raw).get("type")
        if not isinstance(kind, str) or not kind.startswith(NO_OP_EDITS):
            return True
    return False


def _output_config(body: dict[str, Any]) -> bool:
    """Anything but ``effort: high``, which is Messages' default (the same as sending none)."""
    value = body.get("output_config")
    if value is None:
        return False
    return not isinstance(value, dict) or any(
        key != "effort" or setting != "high" for key, setting in value.items()
    )


def _reasoning_effort(body: dict[str, Any]) -> bool:
    return as_dict(body.get("reasoning")).get("effort") not in (None, "none")


def _reasoning_summary(body: dict[str, Any]) -> bool:
    return as_dict(body.get("reasoning")).get("summary") not in (None, "auto")


def _text_format(body: dict[str, Any]) -> bool:
    return as_dict(as_dict(body.get("text")).get("format")).get("type") not in (None, "text")


def _verbosity(body: dict[str, Any]) -> bool:
    return as_dict(body.get("text")).get("verbosity") not in (None, "medium")


def _logprobs(body: dict[str, Any]) -> bool:
    include = as_list(body.get("include"))
    return body.get("top_logprobs") is not None or "message.output_text.logprobs" in include


def _state(body: dict[str, Any]) -> bool:
    return body.get("previous_response_id") is not None or body.get("conversation") is not None


def _tools(body: dict[str, Any]) -> bool:
    return bool(as_list(body.get("tools")))


def _stream(body: dict[str, Any]) -> bool:
    return body.get("stream") is True


# Informational: counted for the warm-up probe (a provider must take tools if the traffic uses
# them), never refused by a translation.
TOOLS: Final = Feature("tools", "tools", "tool definitions", _tools)
STREAM: Final = Feature("stream", "stream", "streaming", _stream)

CHAT: Final = (
    Feature("n", "n", "more than one choice ('n' > 1)", _above("n", 1)),
    Feature(
        "logprobs",
        "logprobs",
        "log probabilities",
        lambda b: b.get("logprobs") is True or b.get("top_logprobs") is not None,
        ("logprobs", "top_logprobs"),
    ),
    Feature("audio", "audio", "audio output", _chat_audio, ("audio", "modalities")),
    Feature("json_format", "response_format", "a JSON response format", _json_format),
    Feature(
        "penalties",
        "frequency_penalty",
        "frequency or presence penalties",
        _nonzero("frequency_penalty", "presence_penalty"),
        ("frequency_penalty", "presence_penalty"),
    ),
    Feature("logit_bias", "logit_bias", "a logit bias", lambda b: bool(b.get("logit_bias"))),
    Feature("seed", "seed", "a sampling seed", _present("seed")),
    Feature("prediction", "prediction", "predicted outputs", _present("prediction")),
    Feature(
        "reasoning_effort", "reasoning_effort", "a reasoning effort", _present("reasoning_effort")
    ),
    Feature("verbosity", "verbosity", "a verbosity", _present("verbosity")),
    Feature("web_search", "web_search_options", "web search", _present("web_search_options")),
    Feature("store", "store", "stored completions", _true("store")),
    Feature(
        "functions",
        "functions",
        "legacy functions",
        lambda b: b.get("functions") is not None or b.get("function_call") is not None,
        ("functions", "function_call"),
    ),
    Feature("builtin_tools", "tools", "tools other than functions", _tool_types("function")),
    Feature("temperature_high", "temperature", "a temperature above 1", _above("temperature", 1)),
    Feature(
        "service_tier", "service_tier", "a service tier other than auto", _tier("auto", "default")
    ),
    TOOLS,
    STREAM,
)

MESSAGES: Final = (
    Feature("thinking", "thinking", "extended thinking", _thinking),
    Feature("top_k", "top_k", "top-k sampling", _present("top_k")),
    Feature(
        "server_tools",
        "tools",
        "server tools (web search, code execution...)",
        _tool_types("custom"),
    ),
    Feature(
        "mcp_servers", "mcp_servers", "MCP servers run by the provider", _present("mcp_servers")
    ),
    Feature("container", "container", "a code-execution container", _present("container")),
    Feature(
        "context_management",
        "context_management",
        "context management other than clearing thinking",
        _context_management,
    ),
    Feature(
        "output_config",
        "output_config",
        "an output effort other than high (the default), or an output format",
        _output_config,
    ),
    Feature(
        "stop_sequences_many",
        "stop_sequences",
        "more than 4 stop sequences",
        lambda b: len(as_list(b.get("stop_sequences"))) > 4,
    ),
    Feature("service_tier", "service_tier", "a service tier other than auto", _tier("auto")),
    TOOLS,
    STREAM,
)

RESPONSES: Final = (
    Feature(
        "state",
        "previous_response_id",
        "provider-held state (a previous response or a conversation)",
        _state,
        ("previous_response_id", "conversation"),
    ),
    Feature("store", "store", "a stored response ('store': true)", _true("store")),
    Feature("background", "background", "a background response", _true("background")),
    Feature(
        "builtin_tools",
        "tools",
        "built-in tools (web search, file search, computer use...)",
        _tool_types("function"),
    ),
    Feature("reasoning_effort", "reasoning", "a reasoning effort", _reasoning_effort),
    Feature("reasoning_summary", "reasoning", "a reasoning summary", _reasoning_summary),
    Feature("json_format", "text", "a JSON text format", _text_format),
    Feature("verbosity", "text", "a verbosity other than medium", _verbosity),
    Feature(
        "logprobs", "top_logprobs", "log probabilities", _logprobs, ("top_logprobs", "include")
    ),
    Feature("max_tool_calls", "max_tool_calls", "a cap on tool calls", _present("max_tool_calls")),
    Feature(
        "truncation_auto",
        "truncation",
        "automatic truncation",
        lambda b: b.get("truncation") == "auto",
    ),
    Feature("prompt_template", "prompt", "a stored prompt template", _present("prompt")),
    Feature("temperature_high", "temperature", "a temperature above 1", _above("temperature", 1)),
    Feature(
        "service_tier", "service_tier", "a service tier other than auto", _tier("auto", "default")
    ),
    TOOLS,
    STREAM,
)

CATALOGUE: Final[Mapping[str, tuple[Feature, ...]]] = {
    "openai.chat": CHAT,
    "anthropic.messages": MESSAGES,
    "openai.responses": RESPONSES,
}


# Per dialect: each top-level field -> the features that read it, with their traffic counter's
# name ("openai.chat:n"). A request is judged by its own fields only: a few dictionary lookups
# for the usual request, whatever the catalogue's size (every served request pays this).
_BY_FIELD: Final[Mapping[str, Mapping[str, tuple[tuple[Feature, str], ...]]]] = {
    dialect: {
        key: tuple((f, f"{dialect}:{f.name}") for f in catalogue if key in f.keys)
        for key in {k for f in catalogue for k in f.keys}
    }
    for dialect, catalogue in CATALOGUE.items()
}


def used(dialect: str, body: dict[str, Any]) -> list[Feature]:
    """The catalogued features ``body`` (a request of ``dialect``) uses."""
    return list(_used(dialect, body).values())


def counters(dialect: str, body: dict[str, Any]) -> list[str]:
    """The traffic counters of the features ``body`` uses (``dialect:feature``)."""
    return list(_used(dialect, body))


def _used(dialect: str, body: dict[str, Any]) -> dict[str, Feature]:
    """counter name -> feature, for the features ``body`` uses, in the order of its fields."""
    found: dict[str, Feature] = {}
    by_field = _BY_FIELD.get(dialect)
    if by_field is None:
        return found
    for key in body:
        entries = by_field.get(key)
        if entries is not None:
            for feature, name in entries:
                if name not in found and feature.used(body):
                    found[name] = feature
    return found


# Every top-level field each agent dialect's translation knows: carried, refused by a feature
# above, or (``UNSENT``) deliberately not sent. Any other field is refused rather than dropped:
# a field this module has not learnt may change what the agent gets.
KNOWN: Final[Mapping[str, frozenset[str]]] = {
    "openai.chat": frozenset(
        {
            "model", "messages", "stream", "stream_options", "tools", "tool_choice",
            "parallel_tool_calls", "max_tokens", "max_completion_tokens", "temperature", "top_p",
            "stop", "user", "safety_identifier", "prompt_cache_key", "n", "logprobs",
            "top_logprobs", "audio", "modalities", "response_format", "frequency_penalty",
            "presence_penalty", "logit_bias", "seed", "prediction", "reasoning_effort",
            "verbosity", "web_search_options", "store", "metadata", "service_tier",
            "functions", "function_call",
        }
    ),
    "anthropic.messages": frozenset(
        {
            "model", "messages", "system", "max_tokens", "stream", "tools", "tool_choice",
            "temperature", "top_p", "top_k", "stop_sequences", "metadata", "thinking",
            "service_tier", "mcp_servers", "container", "context_management", "output_config",
        }
    ),
    "openai.responses": frozenset(
        {
            "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls",
            "max_output_tokens", "temperature", "top_p", "stream", "stream_options", "store",
            "previous_response_id", "conversation", "background", "include", "reasoning",
            "text", "user", "safety_identifier", "prompt_cache_key", "metadata", "truncation",
            "max_tool_calls", "top_logprobs", "prompt", "service_tier", "client_metadata",
        }
    ),
}  # fmt: skip

# Known fields not sent to the other API, and why (the documentation's table says the same):
# caching hints (the provider caches on its own terms), client telemetry, and metadata that only
# tags what a store would keep (translated answers are never stored).
UNSENT: Final[Mapping[str, str]] = {
    "prompt_cache_key": "a caching hint",
    "metadata": "tags for stored completions and responses",
    "client_metadata": "client telemetry (Codex CLI)",
    "stream_options": "stream options of OpenAI's (usage is always asked for)",
    "include": "what to include of output items the translation never produces",
}


def unknown(dialect: str, body: dict[str, Any]) -> str | None:
    """The first top-level field of ``body`` its dialect's translation does not know."""
    known = KNOWN.get(dialect)
    if known is None:
        return None
    return next((name for name in body if name not in known), None)
