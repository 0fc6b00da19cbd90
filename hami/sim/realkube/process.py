"""One child process of the plane: started in its own session with its output in a log file,
probed until ready, stopped with SIGTERM then SIGKILL; every one still running at interpreter
exit is stopped too, so a crashed test run leaves no etcd or API server behind.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

_live: set[Process] = set()
_live_lock = threading.Lock()


class ProcessFailed(RuntimeError):
    """A child exited or never became ready; the message carries the end of its log."""


class Process:
    def __init__(self, name: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self.env = env
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(self.argv)}\n".encode())
            log.flush()
            self._popen = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           env=self.env, start_new_session=True)
        with _live_lock:
            _live.add(self)
        return self

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def wait_ready(self, probe: Callable[[], bool], timeout: float) -> None:
        """Poll `probe` until it is true; ProcessFailed (with the log's end) if the child exits or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                code = self._popen.returncode if self._popen else None
                raise ProcessFailed(f"{self.name} exited with {code} before it was ready; log {self.log_path}:\n"
                                    f"{self.tail()}")
            if probe():
                return
            if time.monotonic() > deadline:
                raise ProcessFailed(f"{self.name} not ready after {timeout:.0f}s; log {self.log_path}:\n{self.tail()}")
            time.sleep(0.2)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM the child's whole session, SIGKILL after `grace` seconds; returns the exit status."""
        popen = self._popen
        if popen is None:
            return None
        if popen.poll() is None:
            _signal_group(popen.pid, signal.SIGTERM)
            try:
                popen.wait(grace)
            except subprocess.TimeoutExpired:
                _signal_group(popen.pid, signal.SIGKILL)
                popen.wait(grace)
        with _live_lock:
            _live.discard(self)
        return popen.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would end it."""
        if self._popen is not None and self._popen.poll() is None:
            _signal_group(self._popen.pid, signal.SIGKILL)
            self._popen.wait(10)

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


@atexit.register
def _stop_all() -> None:
    with _live_lock:
        left = list(_live)
    for proc in left:
        proc.stop(grace=5)


def free_port() -> int:
    """A loopback port free right now (the child binds it a moment later; a lost race shows as a failed start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_ok(url: str, *, ca_file: Path | None = None, token: str | None = None, insecure: bool = False,
            timeout: float = 2.0) -> bool:
    """True when GET `url` answers 200 (TLS verified against `ca_file` unless `insecure`)."""
    context = None
    if url.startswith("https://"):
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False
