"""uvicorn's HTTP protocol with a deadline on reading a request's headers.

uvicorn times out idle keep-alive connections only after a response: a client that opens a
connection and trickles header bytes (slowloris) holds it, and its buffers, for as long as it
likes. This protocol closes a connection whose request line and headers are not complete within
HEADER_READ_TIMEOUT_SECONDS of the connection opening or of the request's first byte.
"""

from __future__ import annotations

import asyncio

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from trustcard.config import get_settings


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that closes connections whose headers take too long to arrive."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, object],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.timeout_seconds = get_settings().HEADER_READ_TIMEOUT_SECONDS
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_header_deadline()

    def on_headers_complete(self) -> None:
        self._cancel_header_deadline()
        super().on_headers_complete()

    def _start_header_deadline(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self.timeout_seconds, self._headers_late)

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_late(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            late = "closed a connection whose headers took over %g s"
            self.logger.info(late, self.timeout_seconds)
            self.transport.close()
