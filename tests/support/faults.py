"""Fault injection between a client and a real server, for failures a server never makes itself."""

import socket
import threading
import time


class CuttingProxy:
    """A TCP proxy that cuts a connection once the server has sent it ``cut_after`` bytes.

    The first ``cuts`` connections that carry that much are cut; later ones pass
    untouched. Point a client at ``url`` instead of the server to see how it copes with
    a stream that breaks halfway.
    """

    def __init__(self, target: tuple[str, int], *, cut_after: int = 0, cuts: int = 0, flip: bool = False,
                 delay_s: float = 0.0, hold_after: int | None = None):
        # flip: instead of cutting, invert one byte there and go on (data corrupted in transit).
        # delay_s: hold each connection's first answer this long (a server slow to respond).
        # hold_after: stop passing the server's bytes on once a connection has had this many,
        # until release(); ``held`` is set then, so a test knows its client is stuck mid-stream.
        self.target, self.cut_after, self.cuts_left, self.flip = target, cut_after, cuts, flip
        self.delay_s = delay_s
        self.hold_after = hold_after
        self.held = threading.Event()
        self._released = threading.Event()
        self.cut = 0
        self.connections = 0  # accepted so far
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self.connections += 1
            threading.Thread(target=self._pump, args=(client, server, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, self.cut_after), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while data := source.recv(65536):
                if limit is not None and sent == 0 and self.delay_s:
                    time.sleep(self.delay_s)
                if limit is not None and self.hold_after is not None and not self._released.is_set() \
                        and sent <= self.hold_after < sent + len(data):
                    at = self.hold_after - sent
                    sink.sendall(data[:at])
                    sent, data = sent + at, data[at:]
                    self.held.set()
                    self._released.wait()
                if limit is not None and sent <= limit < sent + len(data) and self._take_cut():
                    at = limit - sent
                    if not self.flip:
                        sink.sendall(data[:at])
                        break
                    data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]
                sink.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _take_cut(self) -> bool:
        with self._lock:
            if self.cuts_left <= 0:
                return False
            self.cuts_left -= 1
            self.cut += 1
            return True

    def release(self) -> None:
        """Let held streams go on (and hold no more)."""
        self._released.set()

    def close(self) -> None:
        self.release()
        # shutdown() wakes the thread blocked in accept(); close() alone would not.
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(5)
