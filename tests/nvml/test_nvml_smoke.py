"""The GPU smoke check, run against the simulated library: JSON out, no diff against the
catalog, nothing changed, MIG-off answers reported."""

from __future__ import annotations

import json

from hami.devices import find_model
from hami.nvml import Placement, smoke


def test_smoke_reports_and_agrees_with_the_catalog(nvml, node, libpath, tmp_path):
    gi = nvml.create_gpu_instance(nvml.device_by_index(0), 9, Placement(4, 4))
    nvml.create_compute_instance(gi, 2)
    before = node.path.read_text()
    out = tmp_path / "smoke.json"
    assert smoke.main(["--library", libpath, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert node.path.read_text() == before  # read-only
    assert report["diff"] == [] and report["models_not_in_catalog"] == [] and not report["truncated"]
    assert report["elapsed_s"] < 60
    a100, h100, t4, a30 = report["devices"]
    assert a100["mig_mode"] == {"current": True, "pending": True}
    assert [i["placement"] for i in a100["instances"]] == [[4, 4]]
    assert a100["instances"][0]["compute_instances"][0]["mig_uuid"].startswith("MIG-")
    assert len(a100["mig_devices"]) == 1 and a100["max_mig_device_count"] == 7
    assert h100["profiles"] == [] and "nvmlDeviceGetGpuInstanceProfileInfoV" in h100["needs_mig_on"]
    assert h100["placements_by_catalog_id"]["3g.40gb"] == [[0, 4], [4, 4]]  # answered with MIG off
    assert "error" in t4["mig_mode"]
    assert {p["info"]["name"] for p in a30["profiles"]} == {p.name for p in find_model("A30").mig.profiles}


def test_smoke_diff_finds_disagreements(nvml, libpath):
    report = smoke.run(libpath)
    a100 = report["devices"][0]
    a100["profiles"][0]["info"]["memory_mib"] += 1
    a100["name"] = "NVIDIA A100-SXM4-40GB"
    found = smoke.diff_device(a100, find_model("A100-SXM4-40GB"))
    assert [d["field"] for d in found] == ["profile 1g.5gb.memory_mib"]


def test_smoke_without_a_library(tmp_path, capsys):
    assert smoke.main(["--library", str(tmp_path / "none.so")]) == 2
    assert "NVML_ERROR_LIBRARY_NOT_FOUND" in json.loads(capsys.readouterr().out)["error"]
