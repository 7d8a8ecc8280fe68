"""What a connection may hold: uvicorn's h11 protocol with a deadline for a request's headers.

uvicorn closes idle keep-alive connections (``--keep-alive``) and answers 503 beyond
``limit_concurrency`` (``--max-connections``), but it waits for a request's headers as long as the
client likes: a client sending them a byte at a time holds its connection (and a file descriptor)
for ever. ``GuardedH11`` closes a connection whose request line and headers are not whole within
``--header-timeout`` seconds of the connection opening or of its last response. A body that comes
too slowly is the ASGI middleware's to refuse (``JsonBody``: 408 after ``--body-timeout``).
"""

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class GuardedH11(H11Protocol):
    header_timeout = 10.0  # set from ServeSettings.header_timeout before the server starts

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the request line and headers are in
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection has the same time for its headers

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()
