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
* `destroy(targets)` validates the whole set before destroying anything: every target seen (or
  confirmed gone), none in use; otherwise nothing is destroyed.
* `reconcile(desired, live)` works GPU by GPU: on each it destroys idle instances nobody wants,
  then creates the missing ones; an idle instance NVML refuses to destroy is reported `stuck`
  and the GPU goes on; a GPU that fails has its own creations rolled back while the others
  complete; then `ReconcileError` carries the partial result.
* A failed NVML call is never read as a fact: not "no such profile" (`profiles.py`), not "MIG
  mode lost", not "instance gone", not "GPU instance without compute instance". Reads are
  retried (`read_attempts`); `discover` reports a GPU it still cannot read as unknown.
* One lock per GPU serialises this process's operations on it; NVML itself (the driver, or the
  simulated library's file lock) serialises processes. The manager's memory of known instances
  has its own lock and is updated per GPU while that GPU's lock is held.
* Every failure is a `MigError` naming the GPU, the profile, the placement and the NVML error.

Imports `hami.nvml` and `hami.devices` only.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from hami.devices import GpuModel, UnknownModelError, find_model
from hami.mig import errors
from hami.mig.instances import (
    Desired,
    Discovery,
    GpuFailure,
    MigInstance,
    ReconcileResult,
    StuckInstance,
)
from hami.mig.profiles import ProfileInfo, ProfileTable, read_table, recheck
from hami.nvml import Nvml, NvmlError, Placement
from hami.nvml import errors as nvml_errors
from hami.nvml import results as nvml_results
from hami.nvml import structs as nvml_structs

log = logging.getLogger(__name__)

T = TypeVar("T")

# NVML_COMPUTE_INSTANCE_PROFILE_* constants a GPU instance can hold, by compute slices.
_CI_PROFILES = {
    slices: const for slices, const in nvml_structs.COMPUTE_INSTANCE_PROFILE_BY_SLICES.items() if const <= 4
}

_Handle = nvml_results.GpuInstance | nvml_results.ComputeInstance


def _full_ci(prof: ProfileInfo) -> int | None:
    """The compute-instance profile spanning the whole GPU instance (None: not one we know)."""
    return _CI_PROFILES.get(prof.compute_slices)


@dataclass
class _Gpu:
    index: int
    uuid: str
    name: str
    device: nvml_results.Device
    model: GpuModel | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    mig_capable: bool = True
    mig_seen: bool = False  # GetMigMode answered once: the GPU is MIG-capable for good
    mig_enabled: bool = False
    table: ProfileTable | None = None  # read once per MIG mode; doubtful rows re-asked

    def label(self) -> str:
        return f"GPU {self.uuid} (index {self.index}, {self.name})"


@dataclass(frozen=True)
class _Found:
    """An instance as scanned, with the handles needed to destroy it."""

    instance: MigInstance
    gi: nvml_results.GpuInstance
    cis: tuple[tuple[nvml_results.ComputeInstance, nvml_results.ComputeInstanceInfo], ...]


@dataclass
class _Outcome:
    """What reconcile did so far, over every GPU."""

    created: list[MigInstance] = field(default_factory=list)
    destroyed: list[MigInstance] = field(default_factory=list)
    kept: list[MigInstance] = field(default_factory=list)
    kept_in_use: list[MigInstance] = field(default_factory=list)
    stuck: list[StuckInstance] = field(default_factory=list)
    failed: list[GpuFailure] = field(default_factory=list)

    def result(self) -> ReconcileResult:
        return ReconcileResult(
            tuple(self.created), tuple(self.destroyed), tuple(self.kept), tuple(self.kept_in_use),
            tuple(self.stuck), tuple(self.failed),
        )  # fmt: skip


class MigManager:
    """MIG instances of the GPUs one `Nvml` sees (an initialised library; the caller owns it).

    `models` replaces the built-in catalog; `read_attempts` is how often a failing read (MIG
    mode, profile table, instance listing) is tried before the call's error is reported.
    """

    def __init__(self, nvml: Nvml, *, models: tuple[GpuModel, ...] | None = None, read_attempts: int = 3) -> None:
        if read_attempts < 1:
            raise ValueError("read_attempts must be at least 1")
        self._nvml = nvml
        self._models = models
        self._attempts = read_attempts
        self._gpus: dict[str, _Gpu] | None = None
        self._registry = threading.Lock()
        self._memory = threading.Lock()  # guards _known and _known_mig
        self._known: dict[str, dict[object, MigInstance]] = {}  # GPU → identity → instance
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
                    raise errors.NvmlCallError(f"cannot enumerate the GPUs: {exc}", nvml_error=exc) from exc
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

    def _reading(self, read: Callable[[], T]) -> T:
        """`read()`, tried up to `read_attempts` times while it fails with NvmlCallError."""
        for attempt in range(1, self._attempts + 1):
            try:
                return read()
            except errors.NvmlCallError as exc:
                if attempt == self._attempts:
                    raise
                log.info("mig read retried attempt=%d error=%s", attempt, exc)
        raise AssertionError("unreachable")  # pragma: no cover

    def _read_mode(self, gpu: _Gpu) -> nvml_results.MigMode | None:
        """Current and pending mode; None when the GPU is not MIG-capable.

        NOT_SUPPORTED means "not MIG-capable" only for a GPU never seen MIG-capable, with no
        known instances, and (when the catalog says it has MIG) only when NVML says it twice.
        """
        expects_mig = gpu.model is not None and gpu.model.mig is not None
        for attempt in (1, 2):
            try:
                return self._nvml.mig_mode(gpu.device)
            except nvml_errors.NotSupported as exc:
                with self._memory:
                    knows = bool(self._known.get(gpu.uuid)) or gpu.uuid in self._known_mig
                if gpu.mig_seen or knows:
                    raise errors.NvmlCallError(
                        f"{gpu.label()}: cannot read the MIG mode: {exc}, from a GPU seen MIG-capable",
                        gpu=gpu.uuid, nvml_error=exc,
                    ) from exc  # fmt: skip
                if not expects_mig or attempt == 2:
                    return None
            except NvmlError as exc:
                raise errors.NvmlCallError(
                    f"{gpu.label()}: cannot read the MIG mode: {exc}", gpu=gpu.uuid, nvml_error=exc
                ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _refresh_mode(self, gpu: _Gpu) -> bool:
        """Re-read the MIG mode (it changes on reset, reboot, set_mig_mode) and the profile table."""
        mode = self._read_mode(gpu)
        if mode is None:
            gpu.mig_capable, gpu.mig_enabled, gpu.table = False, False, None
            return False
        gpu.mig_capable = gpu.mig_seen = True
        if mode.current != gpu.mig_enabled:
            gpu.table = None
        gpu.mig_enabled = mode.current
        if gpu.mig_enabled:
            try:
                if gpu.table is None:
                    gpu.table = read_table(self._nvml, gpu.device, gpu.model)
                elif gpu.table.doubtful:
                    gpu.table = recheck(self._nvml, gpu.device, gpu.model, gpu.table)
            except NvmlError as exc:
                raise errors.NvmlCallError(
                    f"{gpu.label()}: cannot read the MIG profiles: {exc}", gpu=gpu.uuid, nvml_error=exc
                ) from exc
        return gpu.mig_enabled

    def _resolve(self, gpu: _Gpu, profile: str, placement: int) -> ProfileInfo:
        if not self._refresh_mode(gpu):
            state = "MIG mode is off" if gpu.mig_capable else "it is not MIG-capable"
            raise errors.MigDisabledError(
                f"{gpu.label()}: cannot place {profile} at placement {placement}: {state}",
                gpu=gpu.uuid, profile=profile, placement=placement,
            )  # fmt: skip
        assert gpu.table is not None
        prof = gpu.table.resolve(gpu.model, profile)
        if prof is None:
            missing = ""
            if gpu.table.doubtful and gpu.model is not None and gpu.model.mig is not None:
                names = [p.name for p in gpu.model.mig.profiles if p.nvml_constant in gpu.table.doubtful]
                missing = f"; NVML does not report the catalog's {', '.join(names)} (an older driver?)"
            raise errors.UnknownProfileError(
                f"{gpu.label()} has no MIG profile {profile!r} (placement {placement}); "
                f"its profiles are {gpu.table.names()}{missing}",
                gpu=gpu.uuid, profile=profile, placement=placement,
            )  # fmt: skip
        if placement not in prof.placements:
            raise errors.UnknownProfileError(
                f"{gpu.label()}: {placement} is not a placement of {prof.name}; "
                f"its placements are {', '.join(map(str, prof.placements))}",
                gpu=gpu.uuid, profile=prof.name, placement=placement,
            )  # fmt: skip
        return prof

    def profiles(self, gpu_uuid: str) -> tuple[ProfileInfo, ...]:
        """The GPU's MIG profiles as NVML reports them (name, key, id, placements, MiB, …);
        MigDisabledError when MIG mode is off (NVML answers profile queries only when it is on)."""
        gpu = self._gpu(gpu_uuid)
        with gpu.lock:
            if not self._reading(lambda: self._refresh_mode(gpu)):
                state = "MIG mode is off" if gpu.mig_capable else "it is not MIG-capable"
                raise errors.MigDisabledError(f"{gpu.label()} has no MIG profiles now: {state}", gpu=gpu.uuid)
            assert gpu.table is not None
            return gpu.table.profiles

    @contextlib.contextmanager
    def _locked(self, gpus: Iterable[_Gpu]) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for gpu in sorted({g.uuid: g for g in gpus}.values(), key=lambda g: g.index):
                stack.enter_context(gpu.lock)
            yield

    # -- scanning ----------------------------------------------------------------------------

    def _compute_instances(
        self, gi: nvml_results.GpuInstance, const: int, *, required: bool
    ) -> tuple[nvml_results.ComputeInstance, ...]:
        """The compute instances of one CI profile. NOT_SUPPORTED / INVALID_ARGUMENT mean "this
        GI has no such CI profile" only for a profile other than the full one, and only twice."""
        try:
            return self._nvml.compute_instances(gi, const)
        except (nvml_errors.NotSupported, nvml_errors.InvalidArgument):
            if required:
                raise
        try:
            return self._nvml.compute_instances(gi, const)
        except (nvml_errors.NotSupported, nvml_errors.InvalidArgument):
            return ()

    def _examine(self, gpu: _Gpu, prof: ProfileInfo, gi: nvml_results.GpuInstance) -> _Found:
        info = self._nvml.gpu_instance_info(gi)
        full = _full_ci(prof)
        cis = []
        for slices, const in _CI_PROFILES.items():
            if slices > prof.compute_slices:
                continue
            handles = self._compute_instances(gi, const, required=const == full)
            cis.extend((ci, self._nvml.compute_instance_info(ci)) for ci in handles)
        cis.sort(key=lambda c: (c[1].profile_id != full, c[1].id))
        mig_uuid = self._nvml.uuid(cis[0][1].device) if cis else None
        instance = MigInstance(
            gpu_uuid=gpu.uuid,
            gpu_index=gpu.index,
            profile=prof.name,
            profile_id=prof.profile_id,
            placement=info.placement.start,
            size=info.placement.size,
            gpu_instance_id=info.id,
            compute_instance_id=cis[0][1].id if cis else None,
            mig_uuid=mig_uuid,
        )
        return _Found(instance, gi, tuple(cis))

    def _scan(self, gpu: _Gpu) -> list[_Found]:
        """Every instance on a GPU (caller holds its lock); [] when MIG is off. Retried."""
        return self._reading(lambda: self._scan_once(gpu))

    def _scan_once(self, gpu: _Gpu) -> list[_Found]:
        if not self._refresh_mode(gpu):
            return []
        assert gpu.table is not None
        try:
            found = [
                self._examine(gpu, prof, gi)
                for prof in gpu.table.profiles
                for gi in self._nvml.gpu_instances(gpu.device, prof.profile_id)
            ]
        except NvmlError as exc:
            raise errors.NvmlCallError(
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
            raise errors.NvmlCallError(
                f"GPU {inst.gpu_uuid}: cannot tell whether {inst.profile} at placement {inst.placement} "
                f"is in use: {exc}",
                gpu=inst.gpu_uuid, profile=inst.profile, placement=inst.placement, nvml_error=exc,
            ) from exc  # fmt: skip

    # -- discover ------------------------------------------------------------------------------

    def discover(self, previous: Iterable[MigInstance] = ()) -> Discovery:
        """Adopt every instance that exists now. `lost` = instances known before (from this
        manager, or `previous`, e.g. the last published list after a restart) that are gone.
        A GPU NVML cannot be read on is reported `unknown`, never as a loss."""
        previous = tuple(previous)
        gpus = self._all()
        present = {g.uuid for g in gpus}
        instances: list[MigInstance] = []
        lost: list[MigInstance] = [p for p in previous if p.gpu_uuid not in present]  # the GPU is gone
        enabled, mode_lost, unknown, unknown_errors = [], [], [], []
        for gpu in gpus:
            with gpu.lock:
                with self._memory:  # what was known, plus `previous`: compared now or, if unreadable, later
                    known = self._known.setdefault(gpu.uuid, {})
                    for p in previous:
                        if p.gpu_uuid == gpu.uuid:
                            known.setdefault(_identity(p), p)
                try:
                    found = self._scan(gpu)
                except errors.NvmlCallError as exc:
                    log.warning("mig gpu unknown gpu=%s error=%s", gpu.uuid, exc)
                    unknown.append(gpu.uuid)
                    unknown_errors.append(exc)
                    continue
                now = [f.instance for f in found]
                with self._memory:
                    before = list(self._known.get(gpu.uuid, {}).values())
                    had_mig = gpu.uuid in self._known_mig or bool(before)
                    self._known[gpu.uuid] = {_identity(i): i for i in now}
                    if gpu.mig_enabled:
                        self._known_mig.add(gpu.uuid)
                    else:
                        self._known_mig.discard(gpu.uuid)
            lost.extend(_missing(before, now))
            instances.extend(now)
            if gpu.mig_enabled:
                enabled.append(gpu.uuid)
            elif had_mig:
                mode_lost.append(gpu.uuid)
        gone = _missing(lost, ())  # one report per instance
        if gone:
            log.warning("mig instances lost count=%d instances=%s", len(gone), [i.describe() for i in gone])
        return Discovery(
            tuple(instances), gone, tuple(mode_lost), tuple(enabled), tuple(unknown), tuple(unknown_errors)
        )

    def instances(self, gpu_uuid: str | None = None) -> tuple[MigInstance, ...]:
        """Every instance on the node now, or on one GPU (re-read from NVML); NvmlCallError when
        a GPU cannot be read (never a partial list). One GPU is what Allocate needs: a node of
        eight busy GPUs is some 300 NVML calls to read whole, inside kubelet's Allocate deadline."""
        out: list[MigInstance] = []
        for gpu in self._all() if gpu_uuid is None else [self._gpu(gpu_uuid)]:
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
                raise errors.NvmlCallError(
                    f"{gpu.label()}: cannot {'enable' if enabled else 'disable'} MIG mode: {exc}",
                    gpu=gpu.uuid, nvml_error=exc,
                ) from exc  # fmt: skip
            self._reading(lambda: self._refresh_mode(gpu))
            return change

    # -- ensure --------------------------------------------------------------------------------

    def ensure(self, gpu_uuid: str, profile: str, placement: int) -> MigInstance:
        """The instance of `profile` at `placement` on the GPU, created if it does not exist."""
        gpu = self._gpu(gpu_uuid)
        with gpu.lock:
            prof = self._reading(lambda: self._resolve(gpu, profile, placement))
            existing = self._reading(lambda: self._existing(gpu, prof, placement))
            if existing is not None and existing.instance.mig_uuid is not None:
                self._remember(existing.instance)
                return existing.instance
            undo: list[_Handle] = []
            try:
                instance = self._create(gpu, prof, placement, existing, undo)
            except NvmlError as exc:
                note = self._rollback(undo)
                raise self._failure("cannot create", gpu, prof, placement, exc, note) from exc
            self._remember(instance)
            return instance

    def _existing(self, gpu: _Gpu, prof: ProfileInfo, placement: int) -> _Found | None:
        try:
            for gi in self._nvml.gpu_instances(gpu.device, prof.profile_id):
                found = self._examine(gpu, prof, gi)
                if found.instance.placement == placement:
                    return found
        except NvmlError as exc:
            raise self._failure("cannot look for an existing", gpu, prof, placement, exc) from exc
        return None

    def _create(
        self, gpu: _Gpu, prof: ProfileInfo, placement: int, existing: _Found | None, undo: list[_Handle]
    ) -> MigInstance:
        """GPU instance (unless `existing`), then the compute instance; `undo` collects what was made."""
        if existing is None:
            gi = self._nvml.create_gpu_instance(gpu.device, prof.profile_id, Placement(placement, prof.memory_slices))
            undo.append(gi)
        else:
            gi = existing.gi
        full = _full_ci(prof)
        ci = self._nvml.create_compute_instance(gi, _CI_PROFILES[1] if full is None else full)
        undo.append(ci)
        gi_info = self._nvml.gpu_instance_info(gi)
        ci_info = self._nvml.compute_instance_info(ci)
        return MigInstance(
            gpu_uuid=gpu.uuid,
            gpu_index=gpu.index,
            profile=prof.name,
            profile_id=prof.profile_id,
            placement=gi_info.placement.start,
            size=gi_info.placement.size,
            gpu_instance_id=gi_info.id,
            compute_instance_id=ci_info.id,
            mig_uuid=self._nvml.uuid(ci_info.device),
        )

    def _rollback(self, undo: list[_Handle]) -> str:
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
        self, what: str, gpu: _Gpu, prof: ProfileInfo, placement: int, exc: NvmlError, note: str = ""
    ) -> errors.MigError:
        return errors.NvmlCallError(
            f"{gpu.label()}: {what} {prof.name} instance at placement {placement}: {exc}{note}",
            gpu=gpu.uuid, profile=prof.name, placement=placement, nvml_error=exc,
        )  # fmt: skip

    def _remember(self, inst: MigInstance) -> None:
        with self._memory:
            self._known.setdefault(inst.gpu_uuid, {})[_identity(inst)] = inst

    def _forget(self, inst: MigInstance) -> None:
        with self._memory:
            self._known.get(inst.gpu_uuid, {}).pop(_identity(inst), None)

    # -- destroy -------------------------------------------------------------------------------

    def destroy(
        self, targets: Iterable[str | MigInstance] | str, *, live: Collection[str] = ()
    ) -> tuple[MigInstance, ...]:
        """Destroy the named idle instances (MIG UUIDs, or instances as returned earlier).

        All or nothing: first every target is found (or NVML confirms it no longer exists, then
        it is skipped) and checked idle; if any is in use (MigInUseError) or cannot be checked
        (NvmlCallError), nothing is destroyed. Only NVML refusing a destroy midway (another NVML
        client holds the instance) can stop it after a start; the error's `destroyed` says what
        was destroyed by then. Returns what was destroyed."""
        wanted = [targets] if isinstance(targets, str) else list(targets)
        gpus = self._all()
        with self._locked(gpus):
            found: list[_Found] = []
            blind: list[errors.NvmlCallError] = []
            for gpu in gpus:
                try:
                    found.extend(self._scan(gpu))
                except errors.NvmlCallError as exc:
                    blind.append(exc)
            hits = {id(t): f for t in wanted if (f := _match(t, found)) is not None}
            chosen = list({id(f): f for f in hits.values()}.values())
            absent = [t for t in wanted if id(t) not in hits]
            if absent and blind:
                names = ", ".join(_name(t) for t in absent)
                raise errors.NvmlCallError(
                    f"refusing to destroy: {names} not found and a GPU cannot be read ({blind[0]}); "
                    "nothing was destroyed",
                    gpu=blind[0].gpu, nvml_error=blind[0].nvml_error,
                )  # fmt: skip
            for target in absent:
                self._confirm_gone(target)
            try:
                busy = [f.instance for f in chosen if self._reading(lambda f=f: self._in_use(f, live))]
            except errors.NvmlCallError as exc:
                raise errors.NvmlCallError(
                    f"refusing to destroy: {exc}; nothing was destroyed", gpu=exc.gpu, profile=exc.profile,
                    placement=exc.placement, nvml_error=exc.nvml_error,
                ) from exc  # fmt: skip
            if busy:
                first = busy[0]
                raise errors.MigInUseError(
                    "refusing to destroy instances in use: " + "; ".join(i.describe() for i in busy)
                    + "; nothing was destroyed",
                    gpu=first.gpu_uuid, profile=first.profile, placement=first.placement,
                )  # fmt: skip
            destroyed: list[MigInstance] = []
            for f in chosen:
                try:
                    self._destroy_found(f)
                except errors.MigError as exc:
                    exc.destroyed = tuple(destroyed)
                    raise
                destroyed.append(f.instance)
            return tuple(destroyed)

    def _confirm_gone(self, target: str | MigInstance) -> None:
        """Ask NVML directly about a target no scan showed; refuse when it still exists."""
        mig_uuid = target if isinstance(target, str) else target.mig_uuid
        try:
            if mig_uuid is not None:
                self._nvml.device_by_uuid(mig_uuid)
            else:
                assert isinstance(target, MigInstance)
                gpu = self._gpu(target.gpu_uuid)
                info = self._nvml.gpu_instance_info(self._nvml.gpu_instance_by_id(gpu.device, target.gpu_instance_id))
                if (info.profile_id, info.placement.start) != (target.profile_id, target.placement):
                    return  # the id now names another instance
        except (nvml_errors.NotFound, nvml_errors.NotSupported, errors.UnknownGpuError):
            return
        except NvmlError as exc:
            raise errors.NvmlCallError(
                f"refusing to destroy: cannot tell whether {_name(target)} still exists: {exc}; nothing was destroyed",
                nvml_error=exc,
            ) from exc
        raise errors.MigError(
            f"refusing to destroy: NVML still reports {_name(target)}, but no scan of its GPU showed it; "
            "nothing was destroyed"
        )

    def _destroy_found(self, found: _Found) -> None:
        inst = found.instance
        for ci, _ in found.cis:
            self._destroy_step(inst, lambda ci=ci: self._nvml.destroy_compute_instance(ci))
        self._destroy_step(inst, lambda: self._nvml.destroy_gpu_instance(found.gi))
        self._forget(inst)

    def _destroy_step(self, inst: MigInstance, step: Callable[[], None]) -> None:
        where = dict(gpu=inst.gpu_uuid, profile=inst.profile, placement=inst.placement)
        for attempt in (1, 2):  # once more after a transient error; IN_USE is an answer
            try:
                step()
                return
            except nvml_errors.InUse as exc:
                raise errors.MigInUseError(
                    f"NVML refuses to destroy {inst.describe()}: {exc}: a process started meanwhile, or another "
                    "NVML client (DCGM, a leaked handle) holds it although no process is listed",
                    nvml_error=exc, **where,
                ) from exc  # fmt: skip
            except NvmlError as exc:
                if attempt == 2:
                    raise errors.NvmlCallError(
                        f"GPU {inst.gpu_uuid}: cannot destroy {inst.profile} instance at placement {inst.placement} "
                        f"(GI {inst.gpu_instance_id}): {exc}",
                        nvml_error=exc, **where,
                    ) from exc  # fmt: skip

    # -- reconcile -----------------------------------------------------------------------------

    def reconcile(self, desired: Iterable[Desired], *, live: Collection[str] = ()) -> ReconcileResult:
        """Make each GPU's instances the `desired` ones, never touching an instance in use.

        Invalid desires (unknown GPU or profile, a placement the profile lacks, overlaps) raise
        before anything changes. Then GPU by GPU (module docstring): a stuck idle instance is
        reported in `stuck` and reconcile goes on; a GPU that fails is rolled back and listed in
        `failed`, the others complete, and ReconcileError (with `.result`) is raised at the end."""
        by_gpu: dict[str, list[Desired]] = {}
        for d in desired:
            by_gpu.setdefault(self._gpu(d.gpu_uuid).uuid, []).append(d)
        gpus = self._all()
        outcome = _Outcome()
        unusable: set[str] = set()
        for gpu in gpus:  # validate every GPU's desires first: invalid input changes nothing
            if gpu.uuid in by_gpu:
                with gpu.lock:
                    try:
                        self._plan(gpu, by_gpu[gpu.uuid])
                    except (errors.MigDisabledError, errors.NvmlCallError) as exc:
                        outcome.failed.append(GpuFailure(gpu.uuid, exc))
                        unusable.add(gpu.uuid)
        for gpu in gpus:
            if gpu.uuid in unusable:
                continue
            with gpu.lock:
                try:
                    self._reconcile_gpu(gpu, by_gpu.get(gpu.uuid, []), live, outcome)
                except errors.MigError as exc:
                    log.warning("mig reconcile failed gpu=%s error=%s", gpu.uuid, exc)
                    outcome.failed.append(GpuFailure(gpu.uuid, exc))
        result = outcome.result()
        for stuck in result.stuck:
            log.warning("mig instance stuck instance=%s error=%s", stuck.instance.describe(), stuck.error)
        if result.failed:
            failed = sorted(result.failed, key=lambda f: self._gpu(f.gpu_uuid).index)
            raise errors.ReconcileError(
                "reconcile could not complete "
                + "; ".join(f"GPU {f.gpu_uuid}: {f.error}" for f in failed)
                + " (each failed GPU's creations were rolled back; the other GPUs were reconciled)",
                destroyed=result.destroyed, cause=failed[0].error, result=result,
            )  # fmt: skip
        return result

    def _plan(self, gpu: _Gpu, desires: list[Desired]) -> dict[tuple[int, int], ProfileInfo]:
        """(profile id, placement) → profile of every desired instance on `gpu` (lock held)."""
        wanted: dict[tuple[int, int], ProfileInfo] = {}
        occupied = 0
        for d in desires:
            prof = self._reading(lambda d=d: self._resolve(gpu, d.profile, d.placement))
            if (prof.profile_id, d.placement) in wanted:
                continue
            mask = ((1 << prof.memory_slices) - 1) << d.placement
            if occupied & mask:
                raise errors.ReconcileError(
                    f"{gpu.label()}: the desired {prof.name} at placement {d.placement} overlaps another "
                    "desired instance; nothing was changed",
                    gpu=gpu.uuid, profile=prof.name, placement=d.placement,
                )  # fmt: skip
            occupied |= mask
            wanted[(prof.profile_id, d.placement)] = prof
        return wanted

    def _reconcile_gpu(self, gpu: _Gpu, desires: list[Desired], live: Collection[str], out: _Outcome) -> None:
        """One GPU (lock held): destroy its idle undesired instances, create its missing ones."""
        wanted = self._plan(gpu, desires)
        kept, in_use, incomplete, doomed = [], [], {}, []
        for f in self._scan(gpu):
            slot = (f.instance.profile_id, f.instance.placement)
            if slot in wanted:
                if f.instance.mig_uuid is not None:
                    kept.append(f.instance)
                else:
                    incomplete[slot] = f
            elif self._reading(lambda f=f: self._in_use(f, live)):
                in_use.append(f.instance)
            else:
                doomed.append(f)
        stuck = []
        for f in doomed:
            try:
                self._destroy_found(f)
            except errors.MigError as exc:
                stuck.append(StuckInstance(f.instance, exc))
                continue
            out.destroyed.append(f.instance)
        out.stuck.extend(stuck)
        out.kept.extend(kept)
        out.kept_in_use.extend(in_use)
        present = {(i.profile_id, i.placement) for i in kept}
        undo: list[_Handle] = []
        created = []
        for slot, prof in wanted.items():
            if slot in present:
                continue
            try:
                created.append(self._create(gpu, prof, slot[1], incomplete.get(slot), undo))
            except NvmlError as exc:
                note = self._rollback(undo)
                if stuck:
                    note += "; idle instances NVML would not destroy: " + "; ".join(
                        f"{s.instance.describe()} ({s.error.nvml_error or s.error})" for s in stuck
                    )
                raise self._failure("cannot create", gpu, prof, slot[1], exc, note) from exc
        for inst in created:
            self._remember(inst)
        out.created.extend(created)


def _match(target: str | MigInstance, found: list[_Found]) -> _Found | None:
    for f in found:
        i = f.instance
        if isinstance(target, str):
            if i.mig_uuid == target:
                return f
        elif (i.gpu_uuid, i.gpu_instance_id, i.profile_id, i.placement) == (
            target.gpu_uuid, target.gpu_instance_id, target.profile_id, target.placement
        ):  # fmt: skip
            return f
    return None


def _name(target: str | MigInstance) -> str:
    return target if isinstance(target, str) else target.describe()


def _identity(inst: MigInstance) -> object:
    """The MIG UUID; the GPU-instance identity for a GPU instance without compute instance."""
    return inst.mig_uuid or (inst.gpu_uuid, inst.gpu_instance_id, inst.slot)


def _missing(before: Iterable[MigInstance], now: Iterable[MigInstance]) -> tuple[MigInstance, ...]:
    """Instances of `before` not in `now` (by MIG UUID; by GPU-instance identity without one)."""
    uuids = {i.mig_uuid for i in now if i.mig_uuid}
    ids = {_identity(i) for i in now}
    gone: dict[object, MigInstance] = {}
    for inst in before:
        key = _identity(inst)
        present = inst.mig_uuid in uuids if inst.mig_uuid else key in ids
        if not present:
            gone.setdefault(key, inst)
    return tuple(gone.values())
