"""A TCP proxy on loopback that a test can cut and restore: a database that "goes away".

`down()` closes the listening socket and every open connection, so clients see refused and
reset connections, as when a database server stops; `up()` listens again on the same port.
`cut_on(pattern)` is a blip at one exact moment: the next chunk a client sends that holds
`pattern` is dropped (or, with `deliver=True`, delivered with its answer lost) and every open
connection is reset, while the proxy keeps listening.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._cut: tuple[bytes, bool] | None = None
        self.cuts = 0
        self._muted = False

    def up(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def down(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._open = self._open, set()
        if listener is not None:
            listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    server.close()
                    return
                self._open.update((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink, source is client), daemon=True).start()

    def cut_on(self, pattern: bytes, *, deliver: bool = False) -> None:
        self._cut = (pattern, deliver)

    def _reset_open(self) -> None:
        with self._lock:
            sockets, self._open = self._open, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _pipe(self, source: socket.socket, sink: socket.socket, outbound: bool = False) -> None:
        try:
            while data := source.recv(65536):
                cut = self._cut
                if outbound and cut is not None and cut[0] in data:
                    self._cut = None
                    self.cuts += 1
                    if cut[1]:
                        self._muted = True  # the server's answer goes nowhere
                        sink.sendall(data)
                        time.sleep(0.2)
                    self._reset_open()
                    self._muted = False
                    return
                if not outbound and self._muted:
                    continue
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
