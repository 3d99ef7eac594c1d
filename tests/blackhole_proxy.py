"""A TCP proxy on loopback that can black-hole its traffic: a network fault without an RST.

While black-holed it stops forwarding in both directions and closes nothing, as a dropped
route or a lost NAT entry does: the peers' kernels still accept the bytes, nobody answers.
`heal()` forwards new connections again; connections opened before the fault stay black-holed
(their NAT entry is gone) until `close()`, so only a client's own timeouts, keepalives or
health checks get it out of them.
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
class _Pair:
    client: socket.socket
    upstream: socket.socket
    # Set when the fault starts: this pair never forwards again.
    dead: bool = False


@dataclass
class BlackholeProxy:
    """Listens on 127.0.0.1:port and forwards to upstream_host:upstream_port."""

    upstream_port: int
    upstream_host: str = "127.0.0.1"
    port: int = 0
    blackholed: bool = False
    _pairs: list[_Pair] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _listener: socket.socket | None = None

    def url(self, db: int = 0, password: str | None = None) -> str:
        auth = f":{password}@" if password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def start(self) -> BlackholeProxy:
        self.port = self.port or free_port()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        listener.setblocking(False)
        self._listener = listener
        self._thread = threading.Thread(target=self._run, name="blackhole-proxy", daemon=True)
        self._thread.start()
        return self

    def blackhole(self) -> None:
        """From now on nothing is forwarded; existing connections never forward again."""
        with self._lock:
            self.blackholed = True
            for pair in self._pairs:
                pair.dead = True

    def heal(self) -> None:
        """New connections are forwarded again (old ones stay black-holed)."""
        with self._lock:
            self.blackholed = False

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            for pair in self._pairs:
                pair.client.close()
                pair.upstream.close()
            self._pairs.clear()
        if self._listener is not None:
            self._listener.close()

    def _run(self) -> None:
        assert self._listener is not None
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ, None)
        registered: dict[socket.socket, tuple[_Pair, socket.socket]] = {}
        while not self._stop.is_set():
            for key, _ in selector.select(timeout=0.1):
                if key.data is None:
                    self._accept(selector, registered)
                    continue
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                pair, other = registered[sock]
                if pair.dead:
                    # Stop reading: the bytes wait in the kernel, as on a dead route.
                    selector.unregister(sock)
                    continue
                try:
                    data = sock.recv(CHUNK)
                except OSError:
                    data = b""
                if not data:
                    self._drop(selector, registered, pair)
                    continue
                with contextlib.suppress(OSError):
                    other.sendall(data)
        selector.close()

    def _accept(
        self,
        selector: selectors.BaseSelector,
        registered: dict[socket.socket, tuple[_Pair, socket.socket]],
    ) -> None:
        assert self._listener is not None
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            upstream = socket.create_connection((self.upstream_host, self.upstream_port), 2)
        except OSError:
            client.close()
            return
        pair = _Pair(client, upstream)
        with self._lock:
            # Accepted during the fault: the handshake succeeds, nothing flows.
            pair.dead = self.blackholed
            self._pairs.append(pair)
        if pair.dead:
            return
        for sock, other in ((client, upstream), (upstream, client)):
            sock.setblocking(True)
            registered[sock] = (pair, other)
            selector.register(sock, selectors.EVENT_READ, pair)

    def _drop(
        self,
        selector: selectors.BaseSelector,
        registered: dict[socket.socket, tuple[_Pair, socket.socket]],
        pair: _Pair,
    ) -> None:
        for sock in (pair.client, pair.upstream):
            if sock in registered:
                with contextlib.suppress(KeyError, ValueError):
                    selector.unregister(sock)
                del registered[sock]
            sock.close()
        with self._lock:
            if pair in self._pairs:
                self._pairs.remove(pair)
