"""Bytes on the wire, counted at the socket: a loopback TCP relay in front of the broker.

::

    client ──TCP──► ByteMeter (127.0.0.1:<port>) ──TCP──► broker
                     counts every byte each way

A client (an agent subprocess, the benchmark's publisher) connects to :attr:`ByteMeter.url` instead of the
broker's, so what is counted is exactly what that client writes to and reads from its TCP socket: whole MQTT
packets (fixed header, topic name or alias, packet id, properties, payload), CONNECT, PUBACKs and pings
included. TCP/IP headers are not (they depend on segmentation, not on edgekit). The broker's
``$SYS/broker/bytes/received`` would count every client at once; the relay counts one.
"""

from __future__ import annotations

import socket
import threading

from edgekit.mqtt.urls import BrokerUrl

__all__ = ["ByteMeter"]


class ByteMeter:
    """A threaded TCP relay to ``target`` that counts bytes client → broker (:attr:`up`) and back (:attr:`down`)."""

    def __init__(self, target: BrokerUrl):
        self.target = target
        self.up = 0
        self.down = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, name="byte-meter", daemon=True).start()

    @property
    def url(self) -> str:
        """The relay's URL, with the target's scheme (a TLS session passes through the relay unchanged)."""
        return f"{self.target.security.scheme}://127.0.0.1:{self._server.getsockname()[1]}"

    def snapshot(self) -> tuple[int, int]:
        """(up, down) so far."""
        with self._lock:
            return self.up, self.down

    def close(self) -> None:
        self._closed = True
        for sock in [self._server, *self._sockets]:
            try:
                sock.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
                broker = socket.create_connection((self.target.host, self.target.port))
            except OSError:
                return
            for sock in (client, broker):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # relay at once: no added latency
            self._sockets += [client, broker]
            threading.Thread(target=self._pump, args=(client, broker, "up"), daemon=True).start()
            threading.Thread(target=self._pump, args=(broker, client, "down"), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        """Copy ``src`` to ``dst`` until either side closes, counting the bytes."""
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                with self._lock:
                    setattr(self, direction, getattr(self, direction) + len(data))
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
