"""Control interface of the simulated libnvidia-ml (native/fakenvml): one state file per node.

The C library reads the state file named by `HAMI_FAKENVML_STATE` (in the environment of the
process that calls `nvmlInit`) on every NVML call and writes it back atomically when something
changed, under an exclusive `flock` on `<state>.lock`. This module reads and writes the same
file under the same lock, for what NVML itself cannot do: create a node from GPU models
(`hami.devices`), attach and detach processes to MIG devices or whole GPUs, let another NVML
client hold an instance (destroy answers IN_USE with no process listed), simulate a reboot
or a driver reload (instances gone; volatile — Hopper and later — MIG mode lost; pending Ampere
mode applied), reset one GPU, play a driver without the v3 profile-info structs, and inject
faults (the Nth call of a named NVML function, or of any function with `"*"`, returns a chosen
code). The format is documented in `native/fakenvml/README.md` and `docs/nvml.md`.

Used by tests and `hami/sim`; production code never imports it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hami.devices import Architecture, GpuModel, find_model

STATE_ENV = "HAMI_FAKENVML_STATE"
"""Environment variable naming the state file; read by the C library at nvmlInit."""

LIBRARY_NAME = "libnvidia-ml.so.1"
DEFAULT_DRIVER = "580.65.06"
NO_INSTANCE = -1
_PCI_BUSES = (0x07, 0x0F, 0x47, 0x4E, 0x87, 0x90, 0xB7, 0xBD, 0x18, 0x2A, 0x3B, 0x4C, 0x5D, 0x6E, 0x9A, 0xAB)
_UUID_NAMESPACE = uuid.UUID("8f0d3c52-6a7e-4f3c-9a51-2b7c0e5d9e11")


class FakeNvmlNotBuilt(RuntimeError):
    """The simulated library has not been compiled into hami/sim/_lib."""


def library_path() -> Path:
    """Path of the built simulated libnvidia-ml; raises FakeNvmlNotBuilt saying how to build it."""
    path = Path(__file__).resolve().parent / "_lib" / LIBRARY_NAME
    if not path.is_file():
        raise FakeNvmlNotBuilt(
            f"the simulated NVML library {path} is missing: build it with `pip install -e .` "
            "(or `make native`, i.e. `python setup.py build_ext --inplace`) from the repository root"
        )
    return path


# ----------------------------------------------------------------------------------------------
# The state, as plain mutable records (edited under the lock, then written back).


@dataclass
class Profile:
    """One GPU-instance profile row: what GetGpuInstanceProfileInfo and the placements report."""

    constant: int
    id: int
    slices: int
    mem_slices: int
    cap: int
    mib: int
    sm: int
    ce: int
    dec: int
    enc: int
    jpeg: int
    ofa: int
    placements: tuple[int, ...]
    name: str


@dataclass
class ComputeInstance:
    id: int
    profile_id: int
    start: int
    size: int
    slot: int  # MIG device index (GetMigDeviceHandleByIndex)
    serial: int
    uuid: str


@dataclass
class GpuInstance:
    id: int
    profile_id: int
    start: int
    size: int
    serial: int
    cis: list[ComputeInstance] = field(default_factory=list)


@dataclass
class Process:
    pid: int
    gi: int  # NO_INSTANCE for a process on a GPU with MIG off
    ci: int
    used_mib: int


@dataclass
class Hold:
    """Another NVML client (DCGM, a leaked handle) holding an instance open: destroying it
    answers IN_USE although no process is listed. ci = NO_INSTANCE holds the GPU instance."""

    gi: int
    ci: int


@dataclass
class Gpu:
    uuid: str
    name: str
    model: str
    memory_mib: int
    arch: int
    cc: tuple[int, int]
    pci_device_id: int
    pci_subsystem_id: int
    pci_bus: int
    mig_capable: bool
    mig_current: int
    mig_pending: int
    mig_volatile: bool  # MIG mode lost on reboot / driver reload (Hopper and later)
    mig_reset_required: bool  # a mode change stays pending until a reset (Ampere)
    mem_slices: int
    compute_slices: int
    max_gis: int
    profiles: list[Profile] = field(default_factory=list)
    gis: list[GpuInstance] = field(default_factory=list)
    procs: list[Process] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)


@dataclass
class Fault:
    function: str  # NVML symbol name, or "*" for any call
    countdown: int  # the call that brings this to zero fails
    code: int


@dataclass
class NodeState:
    driver: str = DEFAULT_DRIVER
    serial: int = 0
    boot: int = 1
    trace: bool = False
    profile_info_version: int = 3  # newest profile-info struct the driver knows (2: no v3 structs)
    gpus: list[Gpu] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


class StateFormatError(ValueError):
    """The state file does not follow the documented format."""


def parse(text: str) -> NodeState:
    """Parse a state file (the inverse of `render`)."""
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines or lines[0].split() != ["fakenvml-state", "1"]:
        raise StateFormatError("state file must start with 'fakenvml-state 1'")
    state = NodeState()
    gpu: dict | None = None
    for lineno, line in enumerate(lines[1:], start=2):
        key, _, rest = line.partition(" ")
        words = rest.split()
        if gpu is None:
            if key == "driver":
                state.driver = rest.strip()
            elif key == "serial":
                state.serial = int(rest)
            elif key == "boot":
                state.boot = int(rest)
            elif key == "trace":
                state.trace = bool(int(rest))
            elif key == "profile_info_version":
                state.profile_info_version = int(rest)
            elif key == "fault":
                state.faults.append(Fault(words[0], int(words[1]), int(words[2])))
            elif key == "count":
                state.counts[words[0]] = int(words[1])
            elif key == "gpu":
                gpu = {"profiles": [], "gis": [], "procs": [], "holds": []}
            else:
                raise StateFormatError(f"line {lineno}: unknown top-level key {key!r}")
            continue
        if key == "end":
            state.gpus.append(_gpu_from(gpu))
            gpu = None
        elif key in ("uuid", "name", "model"):
            gpu[key] = rest.strip()
        elif key in ("memory_mib", "arch", "mig_capable", "mig_volatile", "mig_reset_required"):
            gpu[key] = int(rest, 0)
        elif key in ("cc", "mig_mode", "slices", "pci"):
            gpu[key] = tuple(int(w, 0) for w in words)
        elif key == "profile":
            nums = [int(w) for w in words[:12]]
            gpu["profiles"].append(Profile(*nums, tuple(int(s) for s in words[12].split(",")), words[13]))
        elif key == "gi":
            gi_id, pid, start, size, serial = (int(w) for w in words)
            gpu["gis"].append(GpuInstance(gi_id, pid, start, size, serial))
        elif key == "ci":
            gi_id, ci_id, pid, start, size, slot, serial = (int(w) for w in words[:7])
            owner = next((g for g in gpu["gis"] if g.id == gi_id), None)
            if owner is None:
                raise StateFormatError(f"line {lineno}: compute instance of unknown GPU instance {gi_id}")
            owner.cis.append(ComputeInstance(ci_id, pid, start, size, slot, serial, words[7]))
        elif key == "proc":
            gpu["procs"].append(Process(*(int(w) for w in words)))
        elif key == "hold":
            gpu["holds"].append(Hold(int(words[0]), int(words[1])))
        else:
            raise StateFormatError(f"line {lineno}: unknown key {key!r} in a gpu block")
    if gpu is not None:
        raise StateFormatError("unterminated gpu block (missing 'end')")
    return state


def _gpu_from(raw: dict) -> Gpu:
    pci = raw["pci"]
    mem, compute, max_gis = raw["slices"]
    current, pending = raw["mig_mode"]
    return Gpu(
        uuid=raw["uuid"],
        name=raw["name"],
        model=raw.get("model", ""),
        memory_mib=raw["memory_mib"],
        arch=raw["arch"],
        cc=raw["cc"],
        pci_device_id=pci[0],
        pci_subsystem_id=pci[1],
        pci_bus=pci[2],
        mig_capable=bool(raw["mig_capable"]),
        mig_current=current,
        mig_pending=pending,
        mig_volatile=bool(raw["mig_volatile"]),
        mig_reset_required=bool(raw["mig_reset_required"]),
        mem_slices=mem,
        compute_slices=compute,
        max_gis=max_gis,
        profiles=raw["profiles"],
        gis=raw["gis"],
        procs=raw["procs"],
        holds=raw["holds"],
    )


def render(state: NodeState) -> str:
    """The state file text of `state` (the format the C library reads)."""
    out = ["fakenvml-state 1", f"driver {state.driver}", f"serial {state.serial}", f"boot {state.boot}"]
    out.append(f"trace {int(state.trace)}")
    out.append(f"profile_info_version {state.profile_info_version}")
    for g in state.gpus:
        out += [
            "gpu",
            f"uuid {g.uuid}",
            f"name {g.name}",
            f"model {g.model}",
            f"memory_mib {g.memory_mib}",
            f"arch {g.arch}",
            f"cc {g.cc[0]} {g.cc[1]}",
            f"pci 0x{g.pci_device_id:08x} 0x{g.pci_subsystem_id:08x} 0x{g.pci_bus:02x}",
            f"mig_capable {int(g.mig_capable)}",
            f"mig_mode {g.mig_current} {g.mig_pending}",
            f"mig_volatile {int(g.mig_volatile)}",
            f"mig_reset_required {int(g.mig_reset_required)}",
            f"slices {g.mem_slices} {g.compute_slices} {g.max_gis}",
        ]
        for p in g.profiles:
            starts = ",".join(str(s) for s in p.placements)
            out.append(
                f"profile {p.constant} {p.id} {p.slices} {p.mem_slices} {p.cap} {p.mib} {p.sm} "
                f"{p.ce} {p.dec} {p.enc} {p.jpeg} {p.ofa} {starts} {p.name}"
            )
        for gi in g.gis:
            out.append(f"gi {gi.id} {gi.profile_id} {gi.start} {gi.size} {gi.serial}")
            out += [
                f"ci {gi.id} {ci.id} {ci.profile_id} {ci.start} {ci.size} {ci.slot} {ci.serial} {ci.uuid}"
                for ci in gi.cis
            ]
        out += [f"proc {p.pid} {p.gi} {p.ci} {p.used_mib}" for p in g.procs]
        out += [f"hold {h.gi} {h.ci}" for h in g.holds]
        out.append("end")
    out += [f"fault {f.function} {f.countdown} {f.code}" for f in state.faults]
    out += [f"count {name} {n}" for name, n in sorted(state.counts.items())]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------------
# Building a node from catalog models.


@dataclass(frozen=True)
class GpuSpec:
    """One simulated GPU: a catalog model (any name `find_model` accepts) and its MIG mode.

    `reset_required` / `volatile` default to the architecture's behaviour: Ampere keeps a mode
    change pending until a reset and remembers the mode across reboots; Hopper and later switch
    at once and forget the mode on reboot or driver reload.
    """

    model: str | GpuModel
    mig: bool = False
    uuid: str | None = None
    reset_required: bool | None = None
    volatile: bool | None = None


def gpu_from_model(spec: GpuSpec | str | GpuModel, index: int, node: str = "node") -> Gpu:
    """The state record of a GPU of a catalog model, with no instances."""
    if not isinstance(spec, GpuSpec):
        spec = GpuSpec(spec)
    model = spec.model if isinstance(spec.model, GpuModel) else find_model(spec.model)
    ampere = model.architecture <= Architecture.AMPERE
    mig = model.mig
    profiles = []
    if mig is not None:
        profiles = [
            Profile(
                constant=p.nvml_constant,
                id=p.profile_id,
                slices=p.compute_slices,
                mem_slices=p.memory_slices,
                cap=p.instance_cap,
                mib=p.memory_mib,
                sm=p.multiprocessors,
                ce=p.copy_engines,
                dec=p.decoders,
                enc=p.encoders,
                jpeg=p.jpegs,
                ofa=p.ofas,
                placements=tuple(p.placements),
                name=p.name,
            )
            for p in mig.profiles
        ]
    mode = int(spec.mig and mig is not None)
    return Gpu(
        uuid=spec.uuid or f"GPU-{uuid.uuid5(_UUID_NAMESPACE, f'{node}/{index}/{model.key}')}",
        name=model.nvml_name,
        model=model.key,
        memory_mib=model.memory_mib,
        arch=int(model.architecture),
        cc=model.compute_capability,
        pci_device_id=model.pci_device_id,
        pci_subsystem_id=(0x1000 + index) << 16 | 0x10DE,
        pci_bus=_PCI_BUSES[index % len(_PCI_BUSES)],
        mig_capable=mig is not None,
        mig_current=mode,
        mig_pending=mode,
        mig_volatile=(not ampere) if spec.volatile is None else spec.volatile,
        mig_reset_required=ampere if spec.reset_required is None else spec.reset_required,
        mem_slices=mig.memory_slices if mig else 0,
        compute_slices=mig.compute_slices if mig else 0,
        max_gis=mig.max_instances if mig else 0,
        profiles=profiles,
    )


# ----------------------------------------------------------------------------------------------
# The control interface.


class FakeNode:
    """One simulated node: a state file and the operations NVML has no call for."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        gpus: Iterable[GpuSpec | str | GpuModel],
        *,
        node: str = "node",
        driver: str = DEFAULT_DRIVER,
    ) -> FakeNode:
        """Write a fresh state file for GPUs of the given models (index = position)."""
        state = NodeState(driver=driver, gpus=[gpu_from_model(s, i, node) for i, s in enumerate(gpus)])
        fake = cls(path)
        with fake._locked():
            fake._write(state)
        return fake

    def env(self) -> dict[str, str]:
        """The environment entry that points the C library at this node."""
        return {STATE_ENV: str(self.path)}

    # -- locking and I/O ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(f"{self.path}.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, state: NodeState) -> None:
        tmp = f"{self.path}.tmp.py.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(render(state))
        os.replace(tmp, self.path)

    def read(self) -> NodeState:
        """A consistent snapshot of the node."""
        with self._locked():
            return parse(self.path.read_text())

    @contextlib.contextmanager
    def edit(self) -> Iterator[NodeState]:
        """Read-modify-write under the lock; the state is written back when the block exits cleanly."""
        with self._locked():
            state = parse(self.path.read_text())
            yield state
            self._write(state)

    # -- processes -------------------------------------------------------------------------

    def attach(self, mig_uuid: str, pid: int, used_mib: int = 0) -> None:
        """Attach a process to the MIG device `mig_uuid` (it then makes the instance 'in use')."""
        with self.edit() as state:
            for gpu in state.gpus:
                for gi in gpu.gis:
                    for ci in gi.cis:
                        if ci.uuid == mig_uuid:
                            gpu.procs.append(Process(pid, gi.id, ci.id, used_mib))
                            return
            raise KeyError(f"no MIG device {mig_uuid} on this node")

    def attach_gpu(self, index: int, pid: int, used_mib: int = 0) -> None:
        """Attach a process to a whole GPU (no MIG device)."""
        with self.edit() as state:
            state.gpus[index].procs.append(Process(pid, NO_INSTANCE, NO_INSTANCE, used_mib))

    def hold(self, mig_uuid: str) -> None:
        """Another NVML client (DCGM, a leaked handle) holds the MIG device `mig_uuid`: destroying
        its compute or GPU instance answers IN_USE, yet no process is listed on it."""
        with self.edit() as state:
            for gpu in state.gpus:
                for gi in gpu.gis:
                    for ci in gi.cis:
                        if ci.uuid == mig_uuid:
                            gpu.holds.append(Hold(gi.id, ci.id))
                            return
            raise KeyError(f"no MIG device {mig_uuid} on this node")

    def hold_gpu_instance(self, index: int, gi_id: int) -> None:
        """Another client holds GPU instance `gi_id` of GPU `index` (one without compute instance)."""
        with self.edit() as state:
            gpu = state.gpus[index]
            if not any(gi.id == gi_id for gi in gpu.gis):
                raise KeyError(f"no GPU instance {gi_id} on GPU {index}")
            gpu.holds.append(Hold(gi_id, NO_INSTANCE))

    def release(self, mig_uuid: str | None = None) -> None:
        """Drop the holds on `mig_uuid` (every hold on the node when None)."""
        with self.edit() as state:
            for gpu in state.gpus:
                if mig_uuid is None:
                    gpu.holds.clear()
                    continue
                ids = {(gi.id, ci.id) for gi in gpu.gis for ci in gi.cis if ci.uuid == mig_uuid}
                gpu.holds = [h for h in gpu.holds if (h.gi, h.ci) not in ids]

    def detach(self, pid: int) -> None:
        """Detach process `pid` wherever it runs (no error when it is not attached)."""
        with self.edit() as state:
            for gpu in state.gpus:
                gpu.procs = [p for p in gpu.procs if p.pid != pid]

    # -- lifecycle -------------------------------------------------------------------------

    def reboot(self) -> None:
        """Simulate a node reboot: every instance and process is gone, volatile MIG modes are lost,
        pending (Ampere) modes are applied; the boot counter advances (new MIG UUIDs)."""
        with self.edit() as state:
            state.boot += 1
            for gpu in state.gpus:
                _reset(gpu, lose_volatile=True)

    def reload_driver(self) -> None:
        """Simulate unloading and reloading the NVIDIA driver (same effect on MIG as a reboot)."""
        self.reboot()

    def reset_gpu(self, index: int) -> None:
        """Simulate `nvidia-smi --gpu-reset` on one GPU: instances gone, pending mode applied."""
        with self.edit() as state:
            _reset(state.gpus[index], lose_volatile=False)

    def set_profile_info_version(self, version: int) -> None:
        """The newest profile-info struct the simulated driver knows: 3 (current drivers) or 2 (a
        driver with the `…ProfileInfoV` calls but not the v3 structs: v3 answers INVALID_ARGUMENT)."""
        if version not in (2, 3):
            raise ValueError(f"profile-info struct version must be 2 or 3, not {version}")
        with self.edit() as state:
            state.profile_info_version = version

    def set_mig_mode(self, index: int, enabled: bool) -> None:
        """Set a GPU's MIG mode directly (test set-up; bypasses NVML's rules)."""
        with self.edit() as state:
            gpu = state.gpus[index]
            if not gpu.mig_capable:
                raise ValueError(f"GPU {index} ({gpu.name}) is not MIG-capable")
            gpu.mig_current = gpu.mig_pending = int(enabled)

    # -- faults and tracing ----------------------------------------------------------------

    def inject_fault(self, function: str, code: int, *, nth: int = 1, times: int = 1) -> None:
        """Make the `nth` next call of `function` (an NVML symbol, or "*" for any call) return
        `code`, and the `times - 1` calls after it too (a persistent failure). Counting starts
        now and is shared by every process using this node."""
        if nth < 1 or times < 1:
            raise ValueError("nth counts calls from 1; times is at least 1")
        with self.edit() as state:
            state.faults.extend(Fault(function, nth + k, int(code)) for k in range(times))

    def clear_faults(self) -> None:
        with self.edit() as state:
            state.faults.clear()

    def pending_faults(self) -> list[Fault]:
        """Faults armed and not yet fired."""
        return self.read().faults

    def set_trace(self, enabled: bool) -> None:
        """Count every NVML call by function name (see `calls`); costs one write per call."""
        with self.edit() as state:
            state.trace = enabled
            if enabled:
                state.counts.clear()

    def calls(self) -> dict[str, int]:
        """NVML calls per function since tracing was enabled."""
        return dict(self.read().counts)

    # -- views -----------------------------------------------------------------------------

    def instances(self) -> list[tuple[int, GpuInstance]]:
        """(GPU index, GPU instance) for every GPU instance on the node."""
        return [(i, gi) for i, gpu in enumerate(self.read().gpus) for gi in gpu.gis]


def _reset(gpu: Gpu, *, lose_volatile: bool) -> None:
    gpu.gis.clear()
    gpu.procs.clear()
    gpu.holds.clear()
    if not gpu.mig_capable:
        return
    if lose_volatile and gpu.mig_volatile:
        gpu.mig_current = gpu.mig_pending = 0
    else:
        gpu.mig_current = gpu.mig_pending
