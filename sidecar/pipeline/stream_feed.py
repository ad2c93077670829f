"""A relayed stream as the filters see it: chunks cut into whole SSE events, each decoded once by
the dialect and passed through the chain, whatever the chunk boundaries."""

from __future__ import annotations

from holdfast.dialects import StreamDecoder
from sidecar.pipeline.exchange import Chain
from sidecar.pipeline.sse import SseEvents


class StreamFeed:
    __slots__ = ("_chain", "_decoder", "_events", "foreign")

    def __init__(self, chain: Chain, decoder: StreamDecoder) -> None:
        self._chain = chain
        self._decoder = decoder
        self._events = SseEvents()
        self.foreign = False  # the dialect read an event of another API: nothing more passes

    def feed(self, chunk: bytes) -> bytes:
        """What to write to the agent for ``chunk``: its whole events, as the filters left them."""
        if self.foreign:
            return b""
        kept: list[bytes] = []
        for event in self._events.feed(chunk):
            view = self._decoder.feed(event)
            if view.foreign:
                self.foreign = True
                break
            if out := self._chain.event(view, event):
                kept.append(out)
        return kept[0] if len(kept) == 1 else b"".join(kept)

    def rest(self) -> bytes:
        """Whatever trailed the last whole event (a stream cut mid-event), through the filters."""
        rest = self._events.rest()
        if not rest or self.foreign:
            return b""
        view = self._decoder.feed(rest)
        if view.foreign:
            self.foreign = True
            return b""
        return self._chain.event(view, rest) or b""

    def end(self) -> None:
        """The stream ended whole: the calls still open are complete."""
        self._chain.end(self._decoder.finish())
