"""A TCP proxy on loopback that loses the first reply carrying a given marker.

Everything is forwarded both ways until a chunk from the server to a client contains the
marker (e.g. a task name inside a popped message). That chunk and every later one on that
connection are dropped: the command ran on the server, its reply never reaches the client, as
when the connection or the server dies between the two. Requests still go through. When the
server closes the connection (killed), the client's side is closed too.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from dataclasses import dataclass, field

from trustcard.local.redis_server import free_port

CHUNK = 65536


@dataclass
class ReplyDroppingProxy:
    """Listens on 127.0.0.1:port and forwards to 127.0.0.1:upstream_port."""

    upstream_port: int
    port: int = 0
    # Set by arm(): the bytes whose first reply is lost.
    marker: bytes | None = None
    # Replies lost so far (chunks that carried the marker).
    dropped: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _listener: socket.socket | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> ReplyDroppingProxy:
        self.port = self.port or free_port()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        listener.setblocking(False)
        self._listener = listener
        self._thread = threading.Thread(target=self._run, name="reply-dropping-proxy", daemon=True)
        self._thread.start()
        return self

    def arm(self, marker: bytes) -> None:
        """Lose the next reply that contains `marker` (once)."""
        with self._lock:
            self.marker = marker

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._listener is not None:
            self._listener.close()

    def _run(self) -> None:
        assert self._listener is not None
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ, None)
        # socket -> (the other socket, True if it is the server's side, the pair's sockets)
        peers: dict[socket.socket, tuple[socket.socket, bool]] = {}
        # Client sockets whose replies are lost from now on.
        muted: set[socket.socket] = set()
        while not self._stop.is_set():
            for key, _ in selector.select(timeout=0.1):
                if key.data is None:
                    self._accept(selector, peers)
                    continue
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock not in peers:
                    continue
                other, from_server = peers[sock]
                try:
                    data = sock.recv(CHUNK)
                except OSError:
                    data = b""
                if not data:
                    for end in (sock, other):
                        with contextlib.suppress(KeyError, ValueError):
                            selector.unregister(end)
                        peers.pop(end, None)
                        muted.discard(end)
                        end.close()
                    continue
                if from_server:
                    with self._lock:
                        if self.marker is not None and self.marker in data:
                            self.marker = None
                            self.dropped += 1
                            muted.add(other)
                    if other in muted:
                        continue
                with contextlib.suppress(OSError):
                    other.sendall(data)
        for sock in list(peers):
            sock.close()
        selector.close()

    def _accept(
        self,
        selector: selectors.BaseSelector,
        peers: dict[socket.socket, tuple[socket.socket, bool]],
    ) -> None:
        assert self._listener is not None
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), 2)
        except OSError:
            client.close()
            return
        for sock, other, from_server in ((client, upstream, False), (upstream, client, True)):
            sock.setblocking(True)
            peers[sock] = (other, from_server)
            selector.register(sock, selectors.EVENT_READ, True)
