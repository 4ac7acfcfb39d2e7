"""A request body read from gunicorn's socket in large reads.

gunicorn's ``wsgi.input`` reads a Content-Length body 1 KiB at a time, each piece cut
from an 8 KiB ``recv`` through two ``BytesIO`` copies: profiled in an artifact upload,
that Python loop cost about as much CPU as the database's work on the same bytes
(``make bench BENCH=artifacts``). :func:`socket_body` reads the same bytes with
``recv_into`` straight into the buffer the caller asked for.

It takes the body over from gunicorn and keeps gunicorn's books straight: the bytes
gunicorn already holds come first (those its ``Body`` read ahead, then those its
``Unreader`` took from the socket), and the length gunicorn's ``LengthReader`` still
expects shrinks by what is read, so once the response is sent gunicorn discards
exactly the rest of an unread body before the next request on the connection. Any
other input (chunked, another server, a body already partly read through
``request.stream`` in a way we do not know) is returned unchanged.
"""

from __future__ import annotations

import io
import socket
from typing import Any, BinaryIO, cast


class SocketBody(io.RawIOBase):
    """The rest of a Content-Length body: gunicorn's buffered bytes, then the socket."""

    def __init__(self, body: Any) -> None:
        super().__init__()
        self._reader = body.reader
        self._sock: socket.socket = body.reader.unreader.sock
        # Read ahead by gunicorn's Body (already counted off LengthReader.length), then
        # by its Unreader (not counted yet: they count as they are handed out).
        ahead = body.buf.getvalue()
        body.buf = io.BytesIO()
        taken = self._reader.unreader.take_buffered()
        self._buffered = ahead + taken[: self._reader.length]
        if len(taken) > self._reader.length:  # the next request's first bytes
            self._reader.unreader.unread(taken[self._reader.length :])
        self._reader.length -= min(len(taken), self._reader.length)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._buffered:
            n = min(len(view), len(self._buffered))
            view[:n] = self._buffered[:n]
            self._buffered = self._buffered[n:]
            return n
        wanted = min(len(view), self._reader.length)
        if wanted <= 0:
            return 0
        n = self._sock.recv_into(view, wanted)
        self._reader.length -= n
        return n

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes, fewer only at the end of the body (or a client gone):
        several ``recv_into`` into one buffer, so one call answers a whole chunk."""
        if size is None or size < 0:
            return self.readall()
        size = min(size, len(self._buffered) + max(self._reader.length, 0))
        data = bytearray(size)
        view = memoryview(data)
        got = 0
        while got < size:
            n = self.readinto(view[got:])
            if not n:
                break
            got += n
        del view
        return bytes(data) if got == size else bytes(data[:got])


def socket_body(stream: Any) -> BinaryIO:
    """``stream`` (flask's ``request.stream``) as a :class:`SocketBody` when it is
    gunicorn's reader of a Content-Length body, else ``stream`` itself."""
    try:
        from gunicorn.http.body import Body, LengthReader
        from gunicorn.http.unreader import SocketUnreader
    except ImportError:  # not served by gunicorn
        return cast(BinaryIO, stream)
    if (
        type(stream) is Body
        and type(stream.reader) is LengthReader
        and type(stream.reader.unreader) is SocketUnreader
    ):
        return cast(BinaryIO, SocketBody(stream))
    return cast(BinaryIO, stream)
