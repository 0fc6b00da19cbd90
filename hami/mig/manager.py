"""The MIG instance manager of one node: discover/adopt, ensure, destroy, reconcile.

NVML is the truth: every operation re-reads the GPU it touches (instances may have been created
by an earlier agent, by hand, or lost in a reboot) and changes only what it must. The rules:

* `ensure(gpu, profile, placement)` is idempotent: an instance of that profile already at that
  placement is returned as is (an idle one is thereby reused); a GPU instance left without a
  compute instance gets one; otherwise a GPU instance is created *at exactly that placement*
  (never "wherever the driver likes") plus a compute instance spanning it. If a step fails, what
  this call created is destroyed again before the error is raised.
* An instance is *in use* when a process runs on its MIG device or its MIG UUID is among the
  `live` assignments the caller passes (pods that still own it). In-use instances are never
  destroyed: `destroy` refuses, `reconcile` leaves them and reports them.
* `reconcile(desired, live)` destroys idle instances nobody wants, then creates the missing
  ones; if a create fails, every instance it created is rolled back (the destroyed idle ones
  stay destroyed: nobody wanted them).
* One lock per GPU serialises this process's operations on it; NVML itself (the driver, or the
  simulated library's file lock) serialises processes.
* Every failure is a `MigError` naming the GPU, the profile, the placement and the NVML error.

Imports `hami.nvml` and `hami.devices` only.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field

from hami.devices import GpuModel, UnknownModelError, UnknownProfileError, find_model, resolve_profile
from hami.mig import errors
from hami.mig.instances import Desired, Discovery, MigInstance, ReconcileResult
from hami.nvml import Nvml, NvmlError, Placement
from hami.nvml import errors as nvml_errors
from hami.nvml import results as nvml_results
from hami.nvml import structs as nvml_structs

log = logging.getLogger(__name__)

# NVML_COMPUTE_INSTANCE_PROFILE_* constants a GPU instance can hold, by compute slices.
_CI_PROFILES = {
    slices: const for slices, const in nvml_structs.COMPUTE_INSTANCE_PROFILE_BY_SLICES.items() if const <= 4
}


@dataclass(frozen=True)
class _Profile:
    name: str
    constant: int
    id: int
    slices: int
    size: int  # memory slices of every placement
    placements: tuple[int, ...]
    ci_profile: int  # the compute-instance profile spanning the whole GPU instance


@dataclass
class _Gpu:
    index: int
    uuid: str
    name: str
    device: nvml_results.Device
    model: GpuModel | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    mig_capable: bool = True
    mig_enabled: bool = False
    profiles: dict[str, _Profile] | None = None  # immutable for the lifetime of a MIG mode

    def label(self) -> str:
        return f"GPU {self.uuid} (index {self.index}, {self.name})"


@dataclass(frozen=True)
class _Found:
    """An instance as scanned, with the handles needed to destroy it."""

    instance: MigInstance
    gi: nvml_results.GpuInstance
    cis: tuple[tuple[nvml_results.ComputeInstance, nvml_results.ComputeInstanceInfo], ...]


class MigManager:
    """MIG instances of the GPUs one `Nvml` sees (an initialised library; the caller owns it)."""

    def __init__(self, nvml: Nvml, *, models: tuple[GpuModel, ...] | None = None) -> None:
        self._nvml = nvml
        self._models = models
        self._gpus: dict[str, _Gpu] | None = None
        self._registry = threading.Lock()
        self._known: dict[str, dict[tuple[str, int, int], MigInstance]] = {}
        self._known_mig: set[str] = set()

    # -- GPUs and profiles ---------------------------------------------------------------------

    def _all(self) -> list[_Gpu]:
        with self._registry:
            if self._gpus is None:
                gpus: dict[str, _Gpu] = {}
                try:
                    for index in range(self._nvml.device_count()):
                        device = self._nvml.device_by_index(index)
                        uuid, name = self._nvml.uuid(device), self._nvml.name(device)
                        try:
                            model = find_model(name, self._models)
                        except UnknownModelError:
                            model = None
                        gpus[uuid] = _Gpu(index, uuid, name, device, model)
                except NvmlError as exc:
                    raise errors.MigError(f"cannot enumerate the GPUs: {exc}", nvml_error=exc) from exc
                self._gpus = gpus
        return sorted(self._gpus.values(), key=lambda g: g.index)

    def gpu_uuids(self) -> list[str]:
        """UUIDs of the node's physical GPUs, by index."""
        return [g.uuid for g in self._all()]

    def _gpu(self, gpu_uuid: str) -> _Gpu:
        for gpu in self._all():
            if gpu.uuid == gpu_uuid:
                return gpu
        known = ", ".join(g.uuid for g in self._all()) or "none"
        raise errors.UnknownGpuError(f"no GPU {gpu_uuid} on this node (GPUs: {known})", gpu=gpu_uuid)

    def _refresh_mode(self, gpu: _Gpu) -> bool:
        """Re-read the MIG mode (it changes on reset, reboot, set_mig_mode) and the profile table."""
        try:
            mode = self._nvml.mig_mode(gpu.device)
        except nvml_errors.NotSupported:
            gpu.mig_capable, gpu.mig_enabled, gpu.profiles = False, False, None
            return False
        except NvmlError as exc:
            raise errors.MigError(
                f"{gpu.label()}: cannot read the MIG mode: {exc}", gpu=gpu.uuid, nvml_error=exc
            ) from exc
        gpu.mig_capable = True
        if mode.current != gpu.mig_enabled:
            gpu.profiles = None
        gpu.mig_enabled = mode.current
        if gpu.mig_enabled and gpu.profiles is None:
            gpu.profiles = self._read_profiles(gpu)
        return gpu.mig_enabled

    def _read_profiles(self, gpu: _Gpu) -> dict[str, _Profile]:
        try:
            table = {}
            for constant, info in self._nvml.gpu_instance_profiles(gpu.device).items():
                starts = self._nvml.gpu_instance_possible_placements(gpu.device, info.id)
                name = info.profile_name or self._catalog_name(gpu, constant)
                ci = _CI_PROFILES.get(info.slice_count, _CI_PROFILES[1])
                size = starts[0].size if starts else 0
                table[name] = _Profile(
                    name, constant, info.id, info.slice_count, size, tuple(p.start for p in starts), ci
                )
            return table
        except NvmlError as exc:
            raise errors.MigError(
                f"{gpu.label()}: cannot read the MIG profiles: {exc}", gpu=gpu.uuid, nvml_error=exc
            ) from exc

    def _catalog_name(self, gpu: _Gpu, constant: int) -> str:
        if gpu.model is not None and gpu.model.mig is not None:
            for p in gpu.model.mig.profiles:
                if p.nvml_constant == constant:
                    return p.name
        return f"profile-{constant}"

    def _resolve(self, gpu: _Gpu, profile: str, placement: int) -> _Profile:
        if not self._refresh_mode(gpu):
            state = "MIG mode is off" if gpu.mig_capable else "it is not MIG-capable"
            raise errors.MigDisabledError(
                f"{gpu.label()}: cannot place {profile} at placement {placement}: {state}",
                gpu=gpu.uuid, profile=profile, placement=placement,
            )  # fmt: skip
        assert gpu.profiles is not None
        prof = gpu.profiles.get(profile.strip().casefold())
        if prof is None and gpu.model is not None:
            with contextlib.suppress(UnknownProfileError):
                prof = gpu.profiles.get(resolve_profile(gpu.model, profile)[0].name)
        if prof is None:
            raise errors.UnknownProfileError(
                f"{gpu.label()} has no MIG profile {profile!r} (placement {placement}); "
                f"its profiles are {', '.join(gpu.profiles)}",
                gpu=gpu.uuid, profile=profile, placement=placement,
            )  # fmt: skip
        if placement not in prof.placements:
            raise errors.UnknownProfileError(
                f"{gpu.label()}: {placement} is not a placement of {prof.name}; "
                f"its placements are {', '.join(map(str, prof.placements))}",
                gpu=gpu.uuid, profile=prof.name, placement=placement,
            )  # fmt: skip
        return prof

    @contextlib.contextmanager
    def _locked(self, gpus: Iterable[_Gpu]) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for gpu in sorted({g.uuid: g for g in gpus}.values(), key=lambda g: g.index):
                stack.enter_context(gpu.lock)
            yield

    # -- scanning ----------------------------------------------------------------------------

    def _examine(self, gpu: _Gpu, prof: _Profile, gi: nvml_results.GpuInstance) -> _Found:
        info = self._nvml.gpu_instance_info(gi)
        cis = []
        for slices, const in _CI_PROFILES.items():
            if slices > prof.slices:
                continue
            try:
                handles = self._nvml.compute_instances(gi, const)
            except (nvml_errors.NotSupported, nvml_errors.InvalidArgument):
                continue
            cis.extend((ci, self._nvml.compute_instance_info(ci)) for ci in handles)
        cis.sort(key=lambda c: (c[1].profile_id != prof.ci_profile, c[1].id))
        mig_uuid = self._nvml.uuid(cis[0][1].device) if cis else None
        instance = MigInstance(
            gpu_uuid=gpu.uuid,
            gpu_index=gpu.index,
            profile=prof.name,
            profile_id=prof.id,
            placement=info.placement.start,
            size=info.placement.size,
            gpu_instance_id=info.id,
            compute_instance_id=cis[0][1].id if cis else None,
            mig_uuid=mig_uuid,
        )
        return _Found(instance, gi, tuple(cis))

    def _scan(self, gpu: _Gpu) -> list[_Found]:
        """Every instance on a GPU (caller holds its lock); [] when MIG is off."""
        if not self._refresh_mode(gpu):
            return []
        assert gpu.profiles is not None
        try:
            found = [
                self._examine(gpu, prof, gi)
                for prof in gpu.profiles.values()
                for gi in self._nvml.gpu_instances(gpu.device, prof.id)
            ]
        except NvmlError as exc:
            raise errors.MigError(
                f"{gpu.label()}: cannot list its MIG instances: {exc}", gpu=gpu.uuid, nvml_error=exc
            ) from exc
        return sorted(found, key=lambda f: (f.instance.placement, f.instance.profile_id))

    def _in_use(self, found: _Found, live: Collection[str]) -> bool:
        if found.instance.mig_uuid is not None and found.instance.mig_uuid in live:
            return True
        inst = found.instance
        try:
            return any(self._nvml.compute_running_processes(info.device) for _, info in found.cis)
        except NvmlError as exc:
            raise errors.MigError(
                f"GPU {inst.gpu_uuid}: cannot tell whether {inst.profile} at placement {inst.placement} "
                f"is in use: {exc}",
                gpu=inst.gpu_uuid, profile=inst.profile, placement=inst.placement, nvml_error=exc,
            ) from exc  # fmt: skip

    # -- discover ------------------------------------------------------------------------------

    def discover(self, previous: Iterable[MigInstance] = ()) -> Discovery:
        """Adopt every instance that exists now. `lost` = instances known before (from this
        manager, or `previous`, e.g. the last published list after a restart) that are gone."""
        previous = tuple(previous)
        instances: list[MigInstance] = []
        enabled: list[str] = []
        for gpu in self._all():
            with gpu.lock:
                found = self._scan(gpu)
            if gpu.mig_enabled:
                enabled.append(gpu.uuid)
            instances.extend(f.instance for f in found)
        before = [i for per_gpu in self._known.values() for i in per_gpu.values()] + list(previous)
        lost = _missing(before, instances)
        had_mig = self._known_mig | {i.gpu_uuid for i in before}
        mode_lost = tuple(u for u in self.gpu_uuids() if u in had_mig and u not in enabled)
        self._known = {}
        for inst in instances:
            self._known.setdefault(inst.gpu_uuid, {})[inst.slot] = inst
        self._known_mig = set(enabled)
        if lost:
            log.warning("mig instances lost count=%d instances=%s", len(lost), [i.describe() for i in lost])
        return Discovery(tuple(instances), lost, mode_lost, tuple(enabled))

    def instances(self) -> tuple[MigInstance, ...]:
        """Every instance on the node now (re-read from NVML)."""
        out: list[MigInstance] = []
        for gpu in self._all():
            with gpu.lock:
                out.extend(f.instance for f in self._scan(gpu))
        return tuple(out)

    def set_mig_mode(self, gpu_uuid: str, enabled: bool) -> nvml_results.MigModeChange:
        """Ask NVML to switch MIG mode; the result says whether it took effect (Hopper+), is
        pending a reset (Ampere: RESET_REQUIRED) or was refused (IN_USE)."""
        gpu = self._gpu(gpu_uuid)
        with gpu.lock:
            try:
                change = self._nvml.set_mig_mode(gpu.device, enabled)
            except NvmlError as exc:
                raise errors.MigError(
                    f"{gpu.label()}: cannot {'enable' if enabled else 'disable'} MIG mode: {exc}",
                    gpu=gpu.uuid, nvml_error=exc,
                ) from exc  # fmt: skip
            self._refresh_mode(gpu)
            return change

    # -- ensure --------------------------------------------------------------------------------

    def ensure(self, gpu_uuid: str, profile: str, placement: int) -> MigInstance:
        """The instance of `profile` at `placement` on the GPU, created if it does not exist."""
        gpu = self._gpu(gpu_uuid)
        with gpu.lock:
            prof = self._resolve(gpu, profile, placement)
            try:
                existing = next(
                    (
                        f
                        for gi in self._nvml.gpu_instances(gpu.device, prof.id)
                        if (f := self._examine(gpu, prof, gi)).instance.placement == placement
                    ),
                    None,
                )
            except NvmlError as exc:
                raise self._failure("cannot look for an existing", gpu, prof, placement, exc) from exc
            if existing is not None and existing.instance.mig_uuid is not None:
                self._remember(existing.instance)
                return existing.instance
            undo: list[nvml_results.GpuInstance | nvml_results.ComputeInstance] = []
            try:
                instance = self._create(gpu, prof, placement, existing, undo)
            except NvmlError as exc:
                note = self._rollback(undo)
                raise self._failure("cannot create", gpu, prof, placement, exc, note) from exc
            self._remember(instance)
            return instance

    def _create(
        self,
        gpu: _Gpu,
        prof: _Profile,
        placement: int,
        existing: _Found | None,
        undo: list[nvml_results.GpuInstance | nvml_results.ComputeInstance],
    ) -> MigInstance:
        """GPU instance (unless `existing`), then the compute instance; `undo` collects what was made."""
        if existing is None:
            gi = self._nvml.create_gpu_instance(gpu.device, prof.id, Placement(placement, prof.size))
            undo.append(gi)
        else:
            gi = existing.gi
        ci = self._nvml.create_compute_instance(gi, prof.ci_profile)
        undo.append(ci)
        gi_info = self._nvml.gpu_instance_info(gi)
        ci_info = self._nvml.compute_instance_info(ci)
        return MigInstance(
            gpu_uuid=gpu.uuid,
            gpu_index=gpu.index,
            profile=prof.name,
            profile_id=prof.id,
            placement=gi_info.placement.start,
            size=gi_info.placement.size,
            gpu_instance_id=gi_info.id,
            compute_instance_id=ci_info.id,
            mig_uuid=self._nvml.uuid(ci_info.device),
        )

    def _rollback(self, undo: list[nvml_results.GpuInstance | nvml_results.ComputeInstance]) -> str:
        """Destroy what one attempt created, newest first; '' or a note on what could not be undone."""
        failures = []
        for handle in reversed(undo):
            for attempt in (1, 2):  # once more: a transient error must not leak an instance
                try:
                    if isinstance(handle, nvml_results.ComputeInstance):
                        self._nvml.destroy_compute_instance(handle)
                    else:
                        self._nvml.destroy_gpu_instance(handle)
                    break
                except NvmlError as exc:
                    log.warning("mig rollback failed handle=%s attempt=%d error=%s", handle, attempt, exc)
                    if attempt == 2:
                        failures.append(str(exc))
        undo.clear()
        return f"; rollback failed ({'; '.join(failures)}): the next reconcile removes the leftover" if failures else ""

    def _failure(
        self, what: str, gpu: _Gpu, prof: _Profile, placement: int, exc: NvmlError, note: str = ""
    ) -> errors.MigError:
        return errors.MigError(
            f"{gpu.label()}: {what} {prof.name} instance at placement {placement}: {exc}{note}",
            gpu=gpu.uuid, profile=prof.name, placement=placement, nvml_error=exc,
        )  # fmt: skip

    def _remember(self, inst: MigInstance) -> None:
        self._known.setdefault(inst.gpu_uuid, {})[inst.slot] = inst

    def _forget(self, inst: MigInstance) -> None:
        self._known.get(inst.gpu_uuid, {}).pop(inst.slot, None)

    # -- destroy -------------------------------------------------------------------------------

    def destroy(
        self, targets: Iterable[str | MigInstance] | str, *, live: Collection[str] = ()
    ) -> tuple[MigInstance, ...]:
        """Destroy the named idle instances (MIG UUIDs, or instances as returned earlier).
        Names that no longer exist are skipped. If any named instance is in use, nothing is
        destroyed and MigInUseError is raised. Returns what was destroyed."""
        wanted = [targets] if isinstance(targets, str) else list(targets)
        uuids = {t for t in wanted if isinstance(t, str)}
        slots = {
            (t.gpu_uuid, t.gpu_instance_id, t.profile_id, t.placement) for t in wanted if isinstance(t, MigInstance)
        }
        gpus = self._all()
        with self._locked(gpus):
            hits = [
                f
                for gpu in gpus
                for f in self._scan(gpu)
                if f.instance.mig_uuid in uuids
                or (f.instance.gpu_uuid, f.instance.gpu_instance_id, f.instance.profile_id, f.instance.placement)
                in slots
            ]
            busy = [f.instance for f in hits if self._in_use(f, live)]
            if busy:
                first = busy[0]
                raise errors.MigInUseError(
                    "refusing to destroy instances in use: " + "; ".join(i.describe() for i in busy),
                    gpu=first.gpu_uuid, profile=first.profile, placement=first.placement,
                )  # fmt: skip
            destroyed = []
            for f in hits:
                self._destroy_found(f)
                destroyed.append(f.instance)
            return tuple(destroyed)

    def _destroy_found(self, found: _Found) -> None:
        inst = found.instance
        try:
            for ci, _ in found.cis:
                self._nvml.destroy_compute_instance(ci)
            self._nvml.destroy_gpu_instance(found.gi)
        except NvmlError as exc:
            raise errors.MigError(
                f"GPU {inst.gpu_uuid}: cannot destroy {inst.profile} instance at placement {inst.placement} "
                f"(GI {inst.gpu_instance_id}): {exc}",
                gpu=inst.gpu_uuid, profile=inst.profile, placement=inst.placement, nvml_error=exc,
            ) from exc  # fmt: skip
        self._forget(inst)

    # -- reconcile -----------------------------------------------------------------------------

    def reconcile(self, desired: Iterable[Desired], *, live: Collection[str] = ()) -> ReconcileResult:
        """Make the node's instances the `desired` ones, never touching an instance in use."""
        gpus = self._all()
        with self._locked(gpus):
            wanted: dict[tuple[str, int, int], tuple[_Gpu, _Profile]] = {}
            occupied: dict[str, int] = {}
            for d in desired:
                gpu = self._gpu(d.gpu_uuid)
                prof = self._resolve(gpu, d.profile, d.placement)
                if (gpu.uuid, prof.id, d.placement) in wanted:
                    continue
                mask = ((1 << prof.size) - 1) << d.placement
                if occupied.get(gpu.uuid, 0) & mask:
                    raise errors.ReconcileError(
                        f"{gpu.label()}: the desired {prof.name} at placement {d.placement} overlaps another "
                        "desired instance; nothing was changed",
                        gpu=gpu.uuid, profile=prof.name, placement=d.placement,
                    )  # fmt: skip
                occupied[gpu.uuid] = occupied.get(gpu.uuid, 0) | mask
                wanted[(gpu.uuid, prof.id, d.placement)] = (gpu, prof)
            found = [f for gpu in gpus for f in self._scan(gpu)]
            kept, kept_in_use, incomplete, doomed = [], [], {}, []
            for f in found:
                slot = f.instance.slot
                if slot in wanted:
                    if f.instance.mig_uuid is not None:
                        kept.append(f.instance)
                    else:
                        incomplete[slot] = f
                elif self._in_use(f, live):
                    kept_in_use.append(f.instance)
                else:
                    doomed.append(f)
            destroyed: list[MigInstance] = []
            created: list[MigInstance] = []
            undo: list[nvml_results.GpuInstance | nvml_results.ComputeInstance] = []
            present = {i.slot for i in kept}
            try:
                for f in doomed:
                    self._destroy_found(f)
                    destroyed.append(f.instance)
                for slot, (gpu, prof) in wanted.items():
                    if slot in present:
                        continue
                    try:
                        created.append(self._create(gpu, prof, slot[2], incomplete.get(slot), undo))
                    except NvmlError as exc:
                        raise self._failure("cannot create", gpu, prof, slot[2], exc) from exc
            except errors.MigError as exc:
                note = self._rollback(undo)
                raise errors.ReconcileError(
                    f"reconcile failed, its creations rolled back: {exc}{note}", destroyed=tuple(destroyed), cause=exc
                ) from exc
            for inst in created:
                self._remember(inst)
            return ReconcileResult(tuple(created), tuple(destroyed), tuple(kept), tuple(kept_in_use))


def _missing(before: Iterable[MigInstance], now: Iterable[MigInstance]) -> tuple[MigInstance, ...]:
    """Instances of `before` not in `now` (by MIG UUID; by GPU-instance identity without one)."""
    uuids = {i.mig_uuid for i in now if i.mig_uuid}
    ids = {(i.gpu_uuid, i.gpu_instance_id, i.slot) for i in now}
    gone: dict[object, MigInstance] = {}
    for inst in before:
        key: object = inst.mig_uuid or (inst.gpu_uuid, inst.gpu_instance_id, inst.slot)
        present = inst.mig_uuid in uuids if inst.mig_uuid else key in ids
        if not present:
            gone.setdefault(key, inst)
    return tuple(gone.values())
