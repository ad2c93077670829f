"""The relay's side of a translated exchange: a release whose provider speaks another API than
the agent (holdfast.translate). Which kinds of provider serve a dialect at all, the provider's
request, a whole answer and an error answer in the agent's API -- each failure in the
agent's own error shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from holdfast import translate
from holdfast.dialects import DIALECTS, Answer
from holdfast.logs import get_logger
from holdfast.translate import TRANSLATED_HEADER, BadAnswer, Translation
from sidecar.errors import Untranslatable, UntranslatableAnswer, UpstreamWrongDialect
from sidecar.pipeline.body import encode_body
from sidecar.pipeline.exchange import Exchange

log = get_logger(__name__)

# The provider kinds that can serve each dialect, natively or translated (routing's check).
SERVING: Final[Mapping[str, frozenset[str]]] = {
    d.name: translate.kinds_serving(d.name) for d in DIALECTS
}


def translation_for(exchange: Exchange) -> Translation | None:
    """The exchange's translation when its release's provider speaks another API; else None
    (one dictionary lookup and a tuple scan: the passthrough path pays nothing more)."""
    pair = translate.pair_for(exchange.dialect.name, exchange.resolved.release.provider)
    return Translation(pair, exchange.request.body) if pair is not None else None


def outgoing(exchange: Exchange, translation: Translation) -> bytes:
    """The provider's request body; Untranslatable (400, the agent's shape) naming the field."""
    release = exchange.resolved.release
    try:
        body = translation.request(release.base_url)
    except translate.Untranslatable as exc:
        raise Untranslatable(
            f"release {release.name!r} serves {translation.pair.agent} requests through a "
            f"translation into {translation.pair.provider} (its provider is "
            f"{release.provider}), and {exc}. Nothing was sent; send the request without it, "
            "or have an operator route this agent to a release whose provider speaks "
            f"{translation.pair.agent}",
            param=exc.param,
        ) from exc
    exchange.response_headers[TRANSLATED_HEADER] = translation.pair.name
    return encode_body(body)


def answer(
    exchange: Exchange, translation: Translation, status: int, data: bytes
) -> tuple[Answer | None, bytes]:
    """A whole answer (or error) for the agent: the filters' view of it and its bytes."""
    release = exchange.resolved.release
    if status >= 400:
        return None, translation.error(status, data)
    if not 200 <= status < 300:
        return None, data
    try:
        return translation.answer(data)
    except BadAnswer as exc:
        raise UpstreamWrongDialect(
            f"the provider of release {release.name!r} answered HTTP {status} with a body that "
            f"is not a {translation.pair.provider} answer ({exc}; another API at "
            f"{release.base_url}? its provider kind is {release.provider})"
        ) from exc
    except translate.Untranslatable as exc:
        log.warning("translated_answer_refused", release=release.name, pair=translation.pair.name)
        raise UntranslatableAnswer(
            f"the answer of release {release.name!r} cannot be carried into "
            f"{translation.pair.agent} faithfully: {exc}"
        ) from exc
