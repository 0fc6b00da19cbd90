"""Shared helpers for tests over the simulated NVML: nodes in temporary state files, the
environment variable the C library reads, and a loaded `Nvml`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from hami.nvml import Nvml
from hami.sim import fakenvml
from hami.sim.fakenvml import FakeNode, GpuSpec


def library() -> str:
    """The built simulated library (fails with the build instructions when it is missing)."""
    return str(fakenvml.library_path())


@contextlib.contextmanager
def state_env(node: FakeNode) -> Iterator[None]:
    """Point the C library at `node` for the block (for code that cannot use monkeypatch)."""
    old = os.environ.get(fakenvml.STATE_ENV)
    os.environ[fakenvml.STATE_ENV] = str(node.path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(fakenvml.STATE_ENV, None)
        else:
            os.environ[fakenvml.STATE_ENV] = old


@contextlib.contextmanager
def opened(node: FakeNode) -> Iterator[Nvml]:
    """An initialised `Nvml` over the simulated library, pointed at `node`."""
    with state_env(node), Nvml(library()) as nvml:
        yield nvml


def make_node(directory: Path, gpus: Iterable[GpuSpec | str], name: str = "node") -> FakeNode:
    return FakeNode.create(directory / f"{name}.state", gpus, node=name)


def mig(model: str, **kw) -> GpuSpec:
    """A GPU of `model` with MIG mode on."""
    return GpuSpec(model, mig=True, **kw)


def hiding(*names: str):
    """A `Nvml` loader whose library lacks `names`, as an older driver's libnvidia-ml would."""
    import ctypes

    hidden = frozenset(names)

    class Hidden:
        def __init__(self, path: str) -> None:
            self._lib = ctypes.CDLL(path)

        def __getattr__(self, name: str):
            if name in hidden:
                raise AttributeError(f"undefined symbol: {name}")
            return getattr(self._lib, name)

    return Hidden
