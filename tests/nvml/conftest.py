"""Fixtures for the binding tests: a node with one GPU of each kind, and an open Nvml on it."""

import pytest

from hami.sim import fakenvml
from tests.nvml.helpers import library, make_node, mig


@pytest.fixture(scope="session")
def libpath() -> str:
    return library()


@pytest.fixture
def node(tmp_path, monkeypatch):
    """GPU 0: A100-40GB (Ampere, MIG on); 1: H100 (Hopper, MIG off); 2: T4 (no MIG); 3: A30 (MIG on)."""
    fake = make_node(tmp_path, [mig("A100-SXM4-40GB"), "H100-SXM5-80GB", "T4", mig("A30")])
    monkeypatch.setenv(fakenvml.STATE_ENV, str(fake.path))
    return fake


@pytest.fixture
def nvml(node, libpath):
    from hami.nvml import Nvml

    with Nvml(libpath) as lib:
        yield lib
