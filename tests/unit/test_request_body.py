"""mlflow_server.request_body on gunicorn's own reader objects over a real socket pair."""

from __future__ import annotations

import io
import os
import socket
import threading

from gunicorn.http.body import Body, ChunkedReader, LengthReader
from gunicorn.http.unreader import SocketUnreader

from mlflow_server.request_body import SocketBody, socket_body


def _sending(sock: socket.socket, data: bytes) -> threading.Thread:
    thread = threading.Thread(target=sock.sendall, args=(data,), daemon=True)
    thread.start()
    return thread


def test_the_body_comes_whole_and_the_next_request_stays_with_gunicorn() -> None:
    server, client = socket.socketpair()
    body = os.urandom(3 * 1024 * 1024 + 17)
    following = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
    sender = _sending(client, body + following)
    try:
        unreader = SocketUnreader(server)
        reader = LengthReader(unreader, len(body))
        gunicorn_body = Body(reader)
        # gunicorn's reader was used first: its Body and Unreader hold bytes read ahead.
        head = gunicorn_body.read(1000)
        assert gunicorn_body.buf.tell() and unreader.buf.tell()
        fast = socket_body(gunicorn_body)
        assert isinstance(fast, SocketBody)
        got = bytearray()
        while piece := fast.read(1024 * 1024):
            assert len(piece) <= 1024 * 1024
            got += piece
        assert head + bytes(got) == body
        assert reader.length == 0 and fast.read(10) == b""
        assert gunicorn_body.read(10) == b""  # what gunicorn drains before the next request
        sender.join(10)
        rest = bytearray()
        while len(rest) < len(following):
            rest += unreader.read()
        assert bytes(rest) == following
    finally:
        server.close()
        client.close()


def test_a_client_gone_mid_body_is_a_short_read() -> None:
    server, client = socket.socketpair()
    client.sendall(b"x" * 5000)
    client.close()
    try:
        fast = socket_body(Body(LengthReader(SocketUnreader(server), 10_000)))
        assert fast.read(1024 * 1024) == b"x" * 5000
        assert fast.read(1024 * 1024) == b""
    finally:
        server.close()


def test_other_inputs_are_returned_as_they_are() -> None:
    server, client = socket.socketpair()
    try:
        chunked = Body(ChunkedReader(None, SocketUnreader(server)))
        assert socket_body(chunked) is chunked
        plain = io.BytesIO(b"abc")
        assert socket_body(plain) is plain
    finally:
        server.close()
        client.close()


def test_a_small_body_read_ahead_with_the_next_request_leaves_that_request() -> None:
    server, client = socket.socketpair()
    try:
        unreader = SocketUnreader(server)
        # What gunicorn's parser leaves after the headers: this body and the next request.
        unreader.unread(b"0123456789" + b"GET /next HTTP/1.1\r\n\r\n")
        reader = LengthReader(unreader, 10)
        fast = socket_body(Body(reader))
        assert fast.read(1024 * 1024) == b"0123456789"
        assert fast.read(1024 * 1024) == b"" and reader.length == 0
        assert unreader.read() == b"GET /next HTTP/1.1\r\n\r\n"
    finally:
        server.close()
        client.close()
