"""The committed device-plugin stubs are exactly what the pinned grpcio-tools generates from our api.proto."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTO = "hami/deviceplugin/v1beta1/api.proto"
PINNED = "1.85.1"


def test_committed_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    try:
        version = importlib.metadata.version("grpcio-tools")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("grpcio-tools is not installed (pip install grpcio-tools==1.85.1)")
    if version != PINNED:
        pytest.skip(f"grpcio-tools {version} installed; the stubs are pinned to {PINNED}")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", str(ROOT), f"--python_out={tmp_path}",
                    f"--grpc_python_out={tmp_path}", str(ROOT / PROTO)], check=True, capture_output=True)
    for name in ("api_pb2.py", "api_pb2_grpc.py"):
        fresh = (tmp_path / "hami/deviceplugin/v1beta1" / name).read_text()
        committed = (ROOT / "hami/deviceplugin/v1beta1" / name).read_text()
        assert committed == fresh, f"{name} is stale: regenerate it (see hami/deviceplugin/v1beta1/__init__.py)"


def test_wire_paths_and_field_numbers() -> None:
    from hami.deviceplugin.v1beta1 import api_pb2 as pb

    services = pb.DESCRIPTOR.services_by_name
    assert pb.DESCRIPTOR.package == "v1beta1"
    assert [m.name for m in services["Registration"].methods] == ["Register"]
    assert [m.name for m in services["DevicePlugin"].methods] == [
        "GetDevicePluginOptions", "ListAndWatch", "GetPreferredAllocation", "Allocate", "PreStartContainer"]
    assert services["DevicePlugin"].methods_by_name["ListAndWatch"].server_streaming
    fields = {f.name: f.number for f in pb.ContainerAllocateResponse.DESCRIPTOR.fields}
    assert fields == {"envs": 1, "mounts": 2, "devices": 3, "annotations": 4, "cdi_devices": 5}
    fields = {f.name: f.number for f in pb.ContainerPreferredAllocationRequest.DESCRIPTOR.fields}
    assert fields == {"available_deviceIDs": 1, "must_include_deviceIDs": 2, "allocation_size": 3}
    assert {f.name: f.number for f in pb.RegisterRequest.DESCRIPTOR.fields} == {
        "version": 1, "endpoint": 2, "resource_name": 3, "options": 4}
