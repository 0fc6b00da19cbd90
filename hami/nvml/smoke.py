"""GPU smoke check: read-only NVML calls on a real GPU, printed as JSON, diffed against hami/devices.

    python -m hami.nvml.smoke [--library PATH] [--out FILE]

It reports, per GPU: identity, memory, MIG mode, every GPU-instance profile's info, possible
placements and remaining capacity, the existing GPU/compute instances and MIG devices; then a
`diff` of what the driver says against the catalog (`hami.devices`). Calls the driver refuses
while MIG is off are listed under `needs_mig_on` with the driver's answer; placements are asked
for the catalog's profile ids too, since NVML answers them whatever the mode.

It never changes the MIG mode, never creates, destroys or resets anything, and stops after
`--budget` seconds (default 50) so the whole run stays under a minute. Exit status: 0 when NVML
answered (diffs are findings, not failures), 2 when the library could not be loaded or
initialised. This module alone in `hami.nvml` reads `hami.devices` (for the diff).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from hami.devices import GpuModel, UnknownModelError, find_model
from hami.nvml import errors, results, structs
from hami.nvml.library import Nvml

_MIB = 1024 * 1024


class _Budget:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.exhausted = False

    def left(self) -> bool:
        if time.monotonic() > self.deadline:
            self.exhausted = True
        return not self.exhausted


def _ask(fn: Callable[[], Any]) -> tuple[Any, str | None]:
    """(value, None) or (None, "NVML_ERROR_…: message")."""
    try:
        return fn(), None
    except errors.NvmlError as exc:
        return None, f"{exc.code_name}: {exc.nvml_message}"


def _profile_json(info: results.GpuInstanceProfileInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "name": info.profile_name,
        "slice_count": info.slice_count,
        "instance_count": info.instance_count,
        "multiprocessor_count": info.multiprocessor_count,
        "memory_mib": info.memory_mib,
        "engines": {
            "copy": info.copy_engine_count,
            "decoder": info.decoder_count,
            "encoder": info.encoder_count,
            "jpeg": info.jpeg_count,
            "ofa": info.ofa_count,
        },
        "capabilities": info.capabilities,
        "struct_version": info.version,
    }


def _device_json(nvml: Nvml, index: int, budget: _Budget) -> dict[str, Any]:
    dev = nvml.device_by_index(index)
    out: dict[str, Any] = {"index": index, "name": nvml.name(dev), "uuid": nvml.uuid(dev)}
    pci, err = _ask(lambda: nvml.pci_info(dev))
    out["pci"] = {"bus_id": pci.bus_id, "pci_device_id": f"0x{pci.pci_device_id:08x}"} if pci else {"error": err}
    out["architecture"], _ = _ask(lambda: nvml.architecture(dev))
    cc, _ = _ask(lambda: nvml.cuda_compute_capability(dev))
    out["compute_capability"] = list(cc) if cc else None
    mem, err = _ask(lambda: nvml.memory(dev))
    out["memory_mib"] = (
        {"total": mem.total_bytes // _MIB, "free": mem.free_bytes // _MIB, "used": mem.used_bytes // _MIB}
        if mem
        else {"error": err}
    )
    mode, err = _ask(lambda: nvml.mig_mode(dev))
    out["mig_mode"] = {"current": mode.current, "pending": mode.pending} if mode else {"error": err}
    if mode is None:
        return out  # not MIG-capable: nothing more to ask
    needs_on: dict[str, str] = {}
    profiles = []
    for constant in range(structs.GPU_INSTANCE_PROFILE_COUNT):
        if not budget.left():
            break
        info, err = _ask(lambda c=constant: nvml.gpu_instance_profile_info(dev, c))
        entry: dict[str, Any] = {"constant": constant}
        if info is None:
            if err and err.startswith("NVML_ERROR_INVALID_ARGUMENT"):
                continue
            if not mode.current:
                needs_on["nvmlDeviceGetGpuInstanceProfileInfoV"] = err or ""
            continue
        entry["info"] = _profile_json(info)
        starts, err = _ask(lambda i=info.id: nvml.gpu_instance_possible_placements(dev, i))
        entry["placements"] = [[p.start, p.size] for p in starts] if starts is not None else {"error": err}
        free, err = _ask(lambda i=info.id: nvml.gpu_instance_remaining_capacity(dev, i))
        entry["remaining_capacity"] = free if free is not None else {"error": err}
        if err and not mode.current:
            needs_on["nvmlDeviceGetGpuInstanceRemainingCapacity"] = err
        profiles.append(entry)
    out["profiles"] = profiles
    out["placements_by_catalog_id"] = _catalog_placements(nvml, dev, out["name"], needs_on)
    out["needs_mig_on"] = needs_on
    if mode.current and budget.left():
        out["instances"] = _instances(nvml, dev, profiles)
        out["max_mig_device_count"], _ = _ask(lambda: nvml.max_mig_device_count(dev))
        out["mig_devices"] = _mig_devices(nvml, dev)
    return out


def _catalog_placements(nvml: Nvml, dev: results.Device, name: str, needs_on: dict[str, str]) -> dict[str, Any]:
    """Placements for each catalog profile id: NVML documents them as answered with MIG off too."""
    try:
        model = find_model(name)
    except UnknownModelError:
        return {}
    answers: dict[str, Any] = {}
    for p in model.mig.profiles if model.mig else ():
        starts, err = _ask(lambda i=p.profile_id: nvml.gpu_instance_possible_placements(dev, i))
        answers[p.name] = [[s.start, s.size] for s in starts] if starts is not None else {"error": err}
        if err:
            needs_on.setdefault("nvmlDeviceGetGpuInstancePossiblePlacements_v2", err)
    return answers


def _instances(nvml: Nvml, dev: results.Device, profiles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for entry in profiles:
        info = entry["info"]
        gis, err = _ask(lambda i=info["id"]: nvml.gpu_instances(dev, i))
        for gi in gis or ():
            gi_info, err = _ask(lambda g=gi: nvml.gpu_instance_info(g))
            if gi_info is None:
                found.append({"profile": info["name"], "error": err})
                continue
            cis = []
            for slices, const in structs.COMPUTE_INSTANCE_PROFILE_BY_SLICES.items():
                if slices > info["slice_count"] or const > 4:
                    continue
                handles, _ = _ask(lambda g=gi, c=const: nvml.compute_instances(g, c))
                for ci in handles or ():
                    ci_info, err = _ask(lambda h=ci: nvml.compute_instance_info(h))
                    if ci_info is None:
                        cis.append({"error": err})
                        continue
                    uuid, _ = _ask(lambda d=ci_info.device: nvml.uuid(d))
                    cis.append({"id": ci_info.id, "profile_id": ci_info.profile_id, "mig_uuid": uuid,
                                "placement": [ci_info.placement.start, ci_info.placement.size]})  # fmt: skip
            found.append({
                "profile": info["name"], "gpu_instance_id": gi_info.id,
                "placement": [gi_info.placement.start, gi_info.placement.size], "compute_instances": cis,
            })  # fmt: skip
    return found


def _mig_devices(nvml: Nvml, dev: results.Device) -> list[dict[str, Any]]:
    out = []
    for mig in nvml.mig_devices(dev):
        mem, _ = _ask(lambda m=mig: nvml.memory(m))
        out.append({
            "uuid": _ask(lambda m=mig: nvml.uuid(m))[0],
            "name": _ask(lambda m=mig: nvml.name(m))[0],
            "gpu_instance_id": _ask(lambda m=mig: nvml.gpu_instance_id(m))[0],
            "compute_instance_id": _ask(lambda m=mig: nvml.compute_instance_id(m))[0],
            "memory_total_mib": mem.total_bytes // _MIB if mem else None,
        })  # fmt: skip
    return out


# ----------------------------------------------------------------------------------------------
# The diff against hami/devices.


def diff_device(report: dict[str, Any], model: GpuModel) -> list[dict[str, Any]]:
    """Differences between one device's report and its catalog model (empty = agreement)."""
    found: list[dict[str, Any]] = []

    def check(what: str, expected: Any, actual: Any) -> None:
        if actual is not None and expected != actual:
            found.append({"device": report["index"], "field": what, "expected": expected, "actual": actual})

    check("nvml_name", model.nvml_name, report["name"])
    check("memory_mib", model.memory_mib, report.get("memory_mib", {}).get("total"))
    check("architecture", int(model.architecture), report.get("architecture"))
    cc = report.get("compute_capability")
    check("compute_capability", list(model.compute_capability), cc)
    check("pci_device_id", f"0x{model.pci_device_id:08x}", report.get("pci", {}).get("pci_device_id"))
    check("mig_capable", model.mig is not None, "error" not in report.get("mig_mode", {"error": 1}))
    if model.mig is None:
        return found
    by_constant = {p["constant"]: p for p in report.get("profiles", [])}
    for p in model.mig.profiles:
        got = by_constant.pop(p.nvml_constant, None)
        where = f"profile {p.name}"
        if got is None:
            placements = report.get("placements_by_catalog_id", {}).get(p.name)
            if isinstance(placements, list):
                check(f"{where}.placements", [[s, p.memory_slices] for s in p.placements], placements)
            elif report.get("mig_mode", {}).get("current"):
                found.append({"device": report["index"], "field": where, "expected": "present", "actual": "absent"})
            continue
        info = got["info"]
        check(f"{where}.name", p.name, info["name"])
        check(f"{where}.id", p.profile_id, info["id"])
        check(f"{where}.slice_count", p.compute_slices, info["slice_count"])
        check(f"{where}.instance_count", p.instance_cap, info["instance_count"])
        check(f"{where}.memory_mib", p.memory_mib, info["memory_mib"])
        check(f"{where}.multiprocessor_count", p.multiprocessors, info["multiprocessor_count"])
        engines = {"copy": p.copy_engines, "decoder": p.decoders, "encoder": p.encoders, "jpeg": p.jpegs, "ofa": p.ofas}
        check(f"{where}.engines", engines, info["engines"])
        if isinstance(got.get("placements"), list):
            check(f"{where}.placements", [[s, p.memory_slices] for s in p.placements], got["placements"])
    for constant, extra in by_constant.items():
        found.append({"device": report["index"], "field": f"profile constant {constant}",
                      "expected": "absent", "actual": extra["info"]["name"]})  # fmt: skip
    return found


def run(library: str, budget_s: float = 50.0) -> dict[str, Any]:
    """The whole report (what `main` prints)."""
    started = time.monotonic()
    budget = _Budget(budget_s)
    nvml = Nvml(library)
    report: dict[str, Any] = {"library": library, "read_only": True}
    try:
        nvml.init()
    except errors.NvmlError as exc:
        report["error"] = str(exc)
        return report
    try:
        report["driver_version"], _ = _ask(nvml.driver_version)
        devices = []
        for index in range(nvml.device_count()):
            if not budget.left():
                break
            devices.append(_device_json(nvml, index, budget))
        report["devices"] = devices
    finally:
        nvml.shutdown()
    diff, unknown = [], []
    for dev in report["devices"]:
        try:
            diff += diff_device(dev, find_model(dev["name"]))
        except UnknownModelError:
            unknown.append(dev["name"])
    report["diff"] = diff
    report["models_not_in_catalog"] = unknown
    report["truncated"] = budget.exhausted
    report["elapsed_s"] = round(time.monotonic() - started, 3)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hami.nvml.smoke", description=__doc__.split("\n\n")[0])
    parser.add_argument("--library", help="NVML library (default: $HAMI_NVML_LIBRARY or libnvidia-ml.so.1)")
    parser.add_argument("--out", help="write the JSON here instead of stdout")
    parser.add_argument("--budget", type=float, default=50.0, help="stop asking after this many seconds")
    args = parser.parse_args(argv)
    library = args.library or Nvml.from_environment().path
    report = run(library, args.budget)
    text = json.dumps(report, indent=2, sort_keys=False)
    try:
        if args.out:
            with open(args.out, "w") as f:
                f.write(text + "\n")
        else:
            sys.stdout.write(text + "\n")
    except OSError as exc:
        print(f"{parser.prog}: cannot write --out {args.out!r}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if "error" in report:  # the JSON says it too, but a user running it by hand reads the terminal
        print(f"{parser.prog}: NVML did not answer: {report['error']}", file=sys.stderr)
        print(f"{parser.prog}: {_HINT}", file=sys.stderr)
        return 2
    return 0


_HINT = ("this check reads a real NVIDIA GPU: run it on a machine with one, where `nvidia-smi` works. "
         "To see its report without a GPU, run it on the simulated NVML (docs/nvml.md, 'The GPU smoke check').")


if __name__ == "__main__":
    sys.exit(main())
