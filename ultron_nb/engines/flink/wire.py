"""Authenticated JSON messages over a local socket (the job server's protocol).

A message is a 4-byte big-endian length and that many bytes of UTF-8 JSON. A connection
starts with a mutual challenge: each side sends a random nonce and proves it holds the
shared secret by answering the other's with an HMAC-SHA256 — the secret itself never
crosses the socket, and a client never talks to a process that merely took the port.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import socket
import struct
from typing import Any

MAX_MESSAGE = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")


class WireError(Exception):
    """The peer went away, sent garbage or failed the challenge."""


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        try:
            chunk = sock.recv(min(size, 1 << 20))
        except OSError as exc:  # includes timeouts
            raise WireError(f"receive failed: {exc}") from None
        if not chunk:
            raise WireError("the peer closed the connection")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    data = json.dumps(message, default=str).encode()
    try:
        sock.sendall(_HEADER.pack(len(data)) + data)
    except OSError as exc:
        raise WireError(f"send failed: {exc}") from None


def receive(sock: socket.socket) -> dict[str, Any]:
    (size,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    if size > MAX_MESSAGE:
        raise WireError(f"message of {size} bytes refused")
    try:
        value = json.loads(_recv_exact(sock, size))
    except ValueError as exc:
        raise WireError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise WireError("a message must be a JSON object")
    return value


def _proof(key: bytes, role: str, nonce: str) -> str:
    return hmac.new(key, f"{role}:{nonce}".encode(), hashlib.sha256).hexdigest()


def accept_peer(sock: socket.socket, key: bytes) -> None:
    """The server's side of the challenge; WireError if the client does not hold ``key``."""
    mine = secrets.token_hex(16)
    send(sock, {"nonce": mine})
    answer = receive(sock)
    if not hmac.compare_digest(str(answer.get("proof", "")), _proof(key, "client", mine)):
        raise WireError("the client failed the challenge")
    send(sock, {"proof": _proof(key, "server", str(answer.get("nonce", "")))})


def join_peer(sock: socket.socket, key: bytes) -> None:
    """The client's side; WireError if the server does not hold ``key``."""
    theirs = receive(sock)
    mine = secrets.token_hex(16)
    send(sock, {"proof": _proof(key, "client", str(theirs.get("nonce", ""))), "nonce": mine})
    answer = receive(sock)
    if not hmac.compare_digest(str(answer.get("proof", "")), _proof(key, "server", mine)):
        raise WireError("the server failed the challenge")
