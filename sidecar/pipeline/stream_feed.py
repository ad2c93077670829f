"""A relayed stream as the filters see it: chunks cut into whole SSE events, each decoded once by
the dialect and passed through the chain, whatever the chunk boundaries.

Through a translation (holdfast.translate) each provider event is decoded by the provider's
dialect for the filters and written in the agent's for the agent, one provider event giving
zero or more agent events; bytes that only carry usage the agent's body asks for pass the
chain on a view of their own, so a filter may drop them as it drops the chat dialect's.

Most events of a stream are plain text deltas, which no observer reads more from than their
text. The dialect's ``skim`` recognises those by a pattern match (no JSON parse, no split) and
every other event -- usage, tool calls, reasons to stop, errors, whatever the pattern does not
know -- is decoded in full. A provider whose plain events never match (another layout, spaces
in its JSON) stops being skimmed after a few, so it pays for the attempt only a few times."""

from __future__ import annotations

from typing import Final

from holdfast.dialects import EventView, StreamDecoder
from holdfast.translate import StreamTranslation
from sidecar.pipeline.exchange import Chain
from sidecar.pipeline.sse import SseEvents

# Plain events (text only) the skim missed before it matched any: the provider's layout is
# not the one the pattern knows, and the stream is no longer skimmed.
SKIM_MISSES: Final = 8


class StreamFeed:
    __slots__ = (
        "_chain", "_decoder", "_events", "_fast", "_misses", "_skim", "_translation", "foreign",
    )  # fmt: skip

    def __init__(
        self, chain: Chain, decoder: StreamDecoder, translation: StreamTranslation | None = None
    ) -> None:
        self._chain = chain
        self._translation = translation
        self._decoder: StreamDecoder = translation.decoder if translation is not None else decoder
        self._events = SseEvents()
        # The one-event fast path relays the provider's bytes as they are: never through a
        # translation, whose agent gets other events than the provider wrote.
        self._fast = translation is None
        self._skim = self._fast  # try the dialect's skim first (see the module's docstring)
        self._misses = 0
        self.foreign = False  # the dialect read an event of another API: nothing more passes

    def feed(self, chunk: bytes) -> bytes:
        """What to write to the agent for ``chunk``: its whole events, as the filters left them."""
        if self.foreign:
            return b""
        # A match proves the chunk is one whole event: no split, no parse.
        if self._skim and self._events.idle and (view := self._decoder.skim(chunk)) is not None:
            self._misses = -1  # it matched once: the layout is known, keep skimming
            return self._chain.event(view, chunk) or b""
        if self._fast and self._events.whole(chunk):  # one event a chunk: no split, list, join
            view = self._decoded(chunk)
            if view.foreign:
                self.foreign = True
                return b""
            return self._chain.event(view, chunk) or b""
        kept: list[bytes] = []
        for event in self._events.feed(chunk):
            if self._translation is not None:
                if not self._translated(event, kept):
                    break
                continue
            view = (self._skim and self._decoder.skim(event)) or self._decoded(event)
            if view.foreign:
                self.foreign = True
                break
            if out := self._chain.event(view, event):
                kept.append(out)
        return kept[0] if len(kept) == 1 else b"".join(kept)

    def _decoded(self, event: bytes) -> EventView:
        """``event`` decoded in full; counts a plain one the skim could have had."""
        view = self._decoder.feed(event)
        if self._skim and self._misses >= 0 and _plain(view):
            self._misses += 1
            self._skim = self._misses < SKIM_MISSES
        return view

    def _translated(self, event: bytes, kept: list[bytes]) -> bool:
        """One provider event through the translation and the chain; False once it is foreign."""
        assert self._translation is not None
        for view, data in self._translation.feed(event):
            if view.foreign:
                self.foreign = True
                return False
            if out := self._chain.event(view, data):
                kept.append(out)
        return True

    def rest(self) -> bytes:
        """Whatever trailed the last whole event (a stream cut mid-event), through the filters."""
        rest = self._events.rest()
        if not rest or self.foreign:
            return b""
        if self._translation is not None:
            kept: list[bytes] = []
            self._translated(rest, kept)
            return b"".join(kept)
        view: EventView = self._decoder.feed(rest)
        if view.foreign:
            self.foreign = True
            return b""
        return self._chain.event(view, rest) or b""

    def end(self) -> None:
        """The stream ended whole: the calls still open are complete."""
        self._chain.end(self._decoder.finish())


def _plain(view: EventView) -> bool:
    """Text and nothing else: what a skim gives."""
    return bool(view.text) and not (
        view.calls or view.usage or view.finish_reasons or view.refusal or view.error
        or view.response_model or view.response_id or view.issued or view.done
    )  # fmt: skip
