"""The session's real control plane (etcd, kube-apiserver, kube-scheduler; tests/realkube/session.py),
its extender pointed at a test extender for the tests here.

Binaries come from `make kube`. When they are missing the tests skip, loudly, naming the build
log; with HAMI_REQUIRE_REAL_KUBE=1 (CI that must exercise the real plane) they fail instead.
Logs and certificates are deleted after a clean run and kept (path printed) after a failure.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s

from hami.sim.cluster import hami_extender
from hami.sim.realkube import RealPlane
from tests.realkube import session
from tests.realkube.extender import TestExtender

SCHEDULER_NAME = session.SCHEDULER_NAME


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here shares one plane: keep them on one xdist worker (`--dist loadgroup`)."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            for mark in session.REAL_MARKS:
                item.add_marker(mark)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    if report.failed and "realkube" in item.keywords:
        session.note_failure(item.config, item.nodeid)
    return report


@pytest.fixture(scope="session")
def extender() -> Iterator[TestExtender]:
    ext = TestExtender().start()
    yield ext
    ext.stop()


@pytest.fixture(scope="session")
def _real_plane(request: pytest.FixtureRequest, extender: TestExtender,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealPlane]:
    real = session.acquire(request.config, tmp_path_factory)
    extender.api = real.api_client(real.kubeconfig("hami"))
    try:
        yield real
    finally:
        extender.api.close()
        session.release(request.config)


@pytest.fixture
def plane(_real_plane: RealPlane, extender: TestExtender) -> RealPlane:
    """The shared plane, its kube-scheduler calling the test extender (restarted only if another suite
    pointed it elsewhere)."""
    config = dataclasses.replace(_real_plane.scheduler, extenders=(hami_extender(extender.url),))
    _real_plane.use_scheduler(config)
    return _real_plane


@pytest.fixture
def namespace(plane: RealPlane) -> Iterator[str]:
    """A fresh namespace (with its default ServiceAccount) per test; its pods are deleted after it
    (at once: no kubelet confirms), so none is left pending for the next suite's extender."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    plane.namespace(name)
    yield name
    k8s.CoreV1Api(plane.admin()).delete_collection_namespaced_pod(name, grace_period_seconds=0)
