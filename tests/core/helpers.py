"""Builders shared by the engine tests."""

from dataclasses import replace

import pytest

from hami._core import Engine, GpuMode, GpuSpec, ReferenceEngine
from hami.api.requests import ContainerRequest, Mode, Request


@pytest.fixture(params=["compiled", "reference"])
def make_engine(request):
    """Build an engine on either kernel implementation."""
    cls = Engine if request.param == "compiled" else ReferenceEngine

    def make(policy="fragmentation-aware", config=None, features=None):
        return cls(config, policy, features)

    return make


def mig_node(engine, name, n=1, model="NVIDIA A100-SXM4-80GB", prefix=None):
    prefix = prefix or f"GPU-{name}-"
    engine.upsert_node(name, [GpuSpec(f"{prefix}{i}", model, GpuMode.MIG, 81920, index=i) for i in range(n)])
    return [f"{prefix}{i}" for i in range(n)]


def core_node(engine, name, n=1, model="NVIDIA A10", memory=23028, split=10, prefix=None):
    prefix = prefix or f"GPU-{name}-"
    engine.upsert_node(
        name,
        [GpuSpec(f"{prefix}{i}", model, GpuMode.HAMI_CORE, memory, split, index=i) for i in range(n)],
    )
    return [f"{prefix}{i}" for i in range(n)]


def req(mem=0, pct=0, count=1, cores=0, mode=Mode.ANY, **kw):
    if not mem and not pct:
        pct = 100
    return Request((ContainerRequest("main", 0, False, count, mem, pct, cores),), mode=mode, **kw)


def realised(gpu, profile, start, in_use=False, pod_uid=None, *, model="A100-SXM4-80GB", mig_uuid=None):
    """An instance known by its placement (what the engine folds), sized from `model`'s profile."""
    from hami.api.codecs import Placement, RealisedInstance
    from hami.devices import naming

    size = naming.find_model(model).mig.profile(profile).memory_slices
    inst = RealisedInstance.expected(gpu, profile, Placement(start, size), in_use=in_use, pod_uid=pod_uid)
    return inst if mig_uuid is None else replace(inst, mig_uuid=mig_uuid)
