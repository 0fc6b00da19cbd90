"""One real control plane for the session (etcd, kube-apiserver, kube-scheduler), its extender
pointed at a test extender, started once and shared by every test in tests/realkube.

Binaries come from `make kube`. When they are missing the tests skip, loudly, naming the build
log; with HAMI_REQUIRE_REAL_KUBE=1 (CI that must exercise the real plane) they fail instead.
Logs and certificates are deleted after a clean run and kept (path printed) after a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hami.sim.cluster import hami_extender
from hami.sim.kubescheduler import SchedulerConfig
from hami.sim.realkube import BinariesMissing, RealPlane, find_binaries
from tests.realkube.extender import TestExtender

SCHEDULER_NAME = "hami-scheduler"
_failed: list[str] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here shares one plane: keep them on one xdist worker (`--dist loadgroup`)."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.realkube)
            item.add_marker(pytest.mark.xdist_group("realkube"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    if report.failed and "realkube" in item.keywords:
        _failed.append(item.nodeid)
    return report


@pytest.fixture(scope="session")
def kube_binaries():
    try:
        return find_binaries()
    except BinariesMissing as exc:
        if os.environ.get("HAMI_REQUIRE_REAL_KUBE") == "1":
            pytest.fail(f"HAMI_REQUIRE_REAL_KUBE=1 but {exc}")
        pytest.skip(f"REAL-PLANE TESTS SKIPPED: {exc}")


@pytest.fixture(scope="session")
def extender() -> Iterator[TestExtender]:
    ext = TestExtender().start()
    yield ext
    ext.stop()


@pytest.fixture(scope="session")
def plane(kube_binaries, extender: TestExtender, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealPlane]:
    workdir = tmp_path_factory.mktemp("realkube")
    # as the embedded plane's default: `default-scheduler` pods are served too (by a second kube-scheduler)
    config = SchedulerConfig(scheduler_name=SCHEDULER_NAME, extenders=(hami_extender(extender.url),),
                             default_profile=True)
    real = RealPlane(workdir, scheduler=config, binaries=kube_binaries).start()
    extender.api = real.api_client(real.kubeconfig("hami"))
    try:
        yield real
    finally:
        extender.api.close()
        real.stop()
        _assert_gone(real)
        if _failed:
            print(f"\nreal-plane logs kept in {workdir / 'logs'} (failed: {', '.join(_failed)})")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _assert_gone(real: RealPlane) -> None:
    """Clean stop: every process reaped, the API server's port closed."""
    alive = [name for name, proc in real.processes.items() if proc.running()]
    assert not alive, f"still running after stop(): {alive}"
    port = int(real.server.rsplit(":", 1)[1])
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, f"kube-apiserver port {port} still open after stop()"


@pytest.fixture
def namespace(plane: RealPlane) -> str:
    """A fresh namespace (with its default ServiceAccount) per test."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    plane.namespace(name)
    return name
