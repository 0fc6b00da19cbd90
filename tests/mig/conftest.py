"""Fixtures for the MIG manager tests: GPU 0 H100 (Hopper), GPU 1 A30 (Ampere), both MIG on."""

import pytest

from hami.sim import fakenvml
from tests.nvml.helpers import library, make_node, mig


@pytest.fixture(scope="session")
def libpath() -> str:
    return library()


@pytest.fixture
def node(tmp_path, monkeypatch):
    fake = make_node(tmp_path, [mig("H100-SXM5-80GB"), mig("A30"), "L4"])
    monkeypatch.setenv(fakenvml.STATE_ENV, str(fake.path))
    return fake


@pytest.fixture
def nvml(node, libpath):
    from hami.nvml import Nvml

    with Nvml(libpath) as lib:
        yield lib


@pytest.fixture
def manager(nvml):
    from hami.mig import MigManager

    return MigManager(nvml)
