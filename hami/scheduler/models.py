"""GPU models the built-in catalog lacks, built from what the node agent registers.

The agent reads every MIG profile from NVML and registers, beside HAMi's fields, each profile's
compute slices, memory slices and flags (`hami.io/node-nvidia-register`, `migProfiles`). That is
everything the engine needs to enumerate layouts and place instances, so a new GPU needs no
release of ours: the scheduler builds the model from the registration and hands it to the engine.
"""

from __future__ import annotations

from hami.api import codecs
from hami.devices import naming
from hami.devices.errors import UnknownModelError
from hami.devices.models import Architecture, GpuModel, MigProfile, MigSpec, Provenance


class UnusableRegistration(ValueError):
    """The registration does not describe the model well enough to place instances on it."""


def is_known(gpu_type: str) -> bool:
    try:
        naming.find_model(gpu_type)
    except UnknownModelError:
        return False
    return True


def model_from_register(device: codecs.NodeDevice) -> GpuModel:
    """The model of a MIG GPU from its registered `migProfiles` (ours fields required)."""
    if not device.mig_profiles:
        raise UnusableRegistration(f"GPU {device.id} ({device.type}) registers no migProfiles")
    profiles = []
    for p in device.mig_profiles:
        if not p.compute_slices or not p.memory_slices or not p.placements:
            raise UnusableRegistration(
                f"GPU {device.id} ({device.type}) profile {p.name}: computeSlices, memorySlices and placements are "
                "needed to place instances on a model hami's catalog lacks (an agent older than this scheduler?)")
        exclusive = any(f in ("+me", "+me.all") for f in p.flags)
        profiles.append(MigProfile(
            name=p.name, nvml_constant=-1, profile_id=-1, compute_slices=p.compute_slices,
            memory_slices=p.memory_slices, instance_cap=1 if exclusive else len(p.placements),
            memory_mib=p.memory_mb, multiprocessors=0, placements=tuple(sorted(x.start for x in p.placements)),
            provenance=Provenance.OBSERVED))
    memory_slices = max(start + prof.memory_slices for prof in profiles for start in prof.placements)
    spec = MigSpec(memory_slices=memory_slices, compute_slices=max(p.compute_slices for p in profiles),
                   max_instances=max(p.instance_cap for p in profiles), profiles=tuple(profiles))
    if not any(p.is_base for p in profiles):
        raise UnusableRegistration(f"GPU {device.id} ({device.type}): no base profile (<N>g.<X>gb) registered")
    return GpuModel(key=device.type, nvml_name=device.type, memory_mib=device.devmem,
                    # the architecture and PCI id are not registered; the engine uses neither
                    architecture=Architecture.AMPERE, compute_capability=(0, 0), pci_device_id=0, mig=spec)
