"""The one real control plane of a test session (of an xdist worker), shared by every suite that
needs it: tests/realkube (smoke tests, with a test extender) and tests/scheduler (the end-to-end
suite, with our scheduler). Each suite points the plane's kube-scheduler at its own extender with
`RealPlane.use_scheduler`, which restarts only kube-scheduler, and only when the extender changes.

Suites hold the plane through a session fixture each (`acquire` / `release`); the last release
stops it, checks nothing is left running, and deletes its work folder unless a real-plane test
failed (then the folder is kept and its path printed). A plane that failed to start is not tried
again in the same session: every later test fails with the same error.

Missing binaries skip the real-plane tests, naming the build log (`require_binaries`);
HAMI_REQUIRE_REAL_KUBE=1 fails them instead.
"""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hami.sim.kubescheduler import SchedulerConfig
from hami.sim.realkube import Binaries, BinariesMissing, RealPlane, find_binaries

SCHEDULER_NAME = "hami-scheduler"
GROUP = "realkube"  # the xdist group: every real-plane test on one worker (`--dist loadgroup`)
REAL_MARKS = (pytest.mark.realkube, pytest.mark.xdist_group(GROUP))


@dataclass
class _Shared:
    plane: RealPlane | None = None
    error: BaseException | None = None
    users: int = 0
    workdir: Path | None = None
    failed: list[str] = field(default_factory=list)


_KEY = pytest.StashKey[_Shared]()


def require_binaries() -> Binaries:
    """The built binaries; otherwise skip (or, with HAMI_REQUIRE_REAL_KUBE=1, fail) naming the build log."""
    try:
        return find_binaries()
    except BinariesMissing as exc:
        if os.environ.get("HAMI_REQUIRE_REAL_KUBE") == "1":
            pytest.fail(f"HAMI_REQUIRE_REAL_KUBE=1 but {exc}")
        pytest.skip(f"REAL-PLANE TESTS SKIPPED: {exc}")


def _shared(config: pytest.Config) -> _Shared:
    if _KEY not in config.stash:
        config.stash[_KEY] = _Shared()
    return config.stash[_KEY]


def acquire(config: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> RealPlane:
    """The session's plane, started on first use (etcd, kube-apiserver, hami-scheduler and default-scheduler)."""
    shared = _shared(config)
    if shared.error is not None:
        raise RuntimeError(f"the real plane failed to start earlier in this session: {shared.error}")
    if shared.plane is None:
        binaries = require_binaries()
        shared.workdir = tmp_path_factory.mktemp("realkube")
        # as the embedded plane's default: `default-scheduler` pods are served too (by a second kube-scheduler)
        config = SchedulerConfig(scheduler_name=SCHEDULER_NAME, default_profile=True)
        plane = RealPlane(shared.workdir, scheduler=config, binaries=binaries)
        try:
            shared.plane = plane.start()
        except BaseException as exc:
            shared.error = exc
            raise
    shared.users += 1
    return shared.plane


def release(config: pytest.Config) -> None:
    """One suite is done with the plane; the last one stops it (and asserts a clean stop)."""
    shared = _shared(config)
    shared.users -= 1
    if shared.users > 0 or shared.plane is None:
        return
    plane, shared.plane = shared.plane, None
    plane.stop()
    if shared.failed:
        print(f"\nreal-plane logs kept in {shared.workdir / 'logs'} (failed: {', '.join(shared.failed)})")
    elif shared.workdir is not None:
        shutil.rmtree(shared.workdir, ignore_errors=True)
    _assert_gone(plane)


def note_failure(config: pytest.Config, nodeid: str) -> None:
    """A real-plane test failed: keep the plane's logs."""
    _shared(config).failed.append(nodeid)


def _assert_gone(real: RealPlane) -> None:
    """Clean stop: every process reaped, the API server's port closed."""
    alive = [name for name, proc in real.processes.items() if proc.running()]
    assert not alive, f"still running after stop(): {alive}"
    port = int(real.server.rsplit(":", 1)[1])
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, f"kube-apiserver port {port} still open after stop()"
