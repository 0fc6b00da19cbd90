"""The openb trace (Alibaba cluster-trace-gpu-v2023): loading and mapping to MIG requests.

Nodes keep their count and GPUs per node but are re-modelled as a MIG-capable model. Pods:
a single-GPU share ``gpu_milli/1000`` becomes ``share × the GPU's memory`` MiB, which the
engine's memory rule maps to the smallest profile that holds it (reference
scheduling-quality §6, mapping M1); a whole GPU (``gpu_milli`` 1000) or a multi-GPU pod asks
for that many whole GPUs on one node. CPU-only pods are skipped; CPU, memory and
``gpu_spec`` are ignored (the caller says so in its output).
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

from hami.api.requests import ContainerRequest, Mode, Request

NODE_LIST = "openb_node_list_gpu_node.csv"
DEFAULT_POD_LIST = "openb_pod_list_default.csv"
# Not shipped: its upstream states no redistribution terms. Where a user gets it:
UPSTREAM_REPOSITORY = "https://github.com/alibaba/clusterdata"
UPSTREAM_FOLDER = "cluster-trace-gpu-v2023/csv"


class TraceError(ValueError):
    """A trace file that cannot be used; the message names the file and line."""


class TraceMissing(TraceError):
    """The openb trace is not where we looked; the message says where to get it."""


def missing_trace_message(trace_dir: Path) -> str:
    """One line: where we looked, where the trace comes from, how to point at it."""
    return (f"the openb trace is not in {trace_dir} (no {DEFAULT_POD_LIST}). hami does not ship it: download "
            f"the folder {UPSTREAM_FOLDER} of {UPSTREAM_REPOSITORY} and pass --trace-dir <that csv folder> or set "
            "HAMI_TRACE_DIR to it (README, 'The openb trace'). The uniform mix needs no trace: "
            "hami simulate online --mix uniform")


def require(trace_dir: Path, files: list[Path]) -> None:
    """Check, before any work, that the trace files a run reads exist.

    A folder without the openb trace gets `TraceMissing` (where to download it); a folder that has
    it but lacks one pod list gets the pod lists it does have."""
    absent = [f for f in files if not f.is_file()]
    if not absent:
        return
    if not (trace_dir / DEFAULT_POD_LIST).is_file() and any(f.parent == trace_dir for f in absent):
        raise TraceMissing(missing_trace_message(trace_dir))
    have = sorted(f.name.removeprefix("openb_pod_list_").removesuffix(".csv")
                  for f in trace_dir.glob("openb_pod_list_*.csv"))
    raise TraceError(f"{absent[0]}: no such trace file (pod lists in {trace_dir}: {', '.join(have) or 'none'})")


@dataclass(frozen=True)
class TraceNode:
    name: str
    gpus: int


@dataclass(frozen=True)
class TracePod:
    name: str
    num_gpu: int
    gpu_milli: int  # per GPU, 1000 = a whole GPU


def default_trace_dir() -> Path:
    """$HAMI_TRACE_DIR, else a copy beside the checkout (../shared/traces/openb-gpu-v2023/csv),
    never inside it: the trace must not be committed or shipped."""
    env = os.environ.get("HAMI_TRACE_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "traces" / "openb-gpu-v2023" / "csv"


def _int(value: str, path: Path, line: int, column: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise TraceError(f"{path}:{line}: column {column!r} must be an integer, got {value!r}") from None


def _rows(path: Path, required: tuple[str, ...]):
    if not path.is_file():
        raise TraceError(f"{path}: no such trace file (set --trace-dir or HAMI_TRACE_DIR)")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise TraceError(f"{path}:1: missing column(s) {', '.join(missing)}; expected {', '.join(required)}")
        for line, row in enumerate(reader, start=2):
            if None in row or any(row.get(c) is None for c in required):
                raise TraceError(f"{path}:{line}: wrong number of fields")
            yield line, row


def load_nodes(path: Path) -> list[TraceNode]:
    nodes = []
    for line, row in _rows(path, ("sn", "gpu")):
        gpus = _int(row["gpu"], path, line, "gpu")
        if gpus < 0 or gpus > 64:
            raise TraceError(f"{path}:{line}: gpu {gpus} out of range 0..64")
        if gpus:
            nodes.append(TraceNode(row["sn"], gpus))
    if not nodes:
        raise TraceError(f"{path}: no GPU nodes")
    return nodes


def load_pods(path: Path) -> list[TracePod]:
    """GPU pods of a pod list (CPU-only pods skipped)."""
    pods = []
    for line, row in _rows(path, ("name", "num_gpu", "gpu_milli")):
        num = _int(row["num_gpu"], path, line, "num_gpu")
        milli = _int(row["gpu_milli"], path, line, "gpu_milli")
        if num < 0 or num > 64:
            raise TraceError(f"{path}:{line}: num_gpu {num} out of range 0..64")
        if num == 0:
            continue
        if milli <= 0 or milli > 1000:
            raise TraceError(f"{path}:{line}: gpu_milli {milli} out of range 1..1000 for a GPU pod")
        if num > 1 and milli != 1000:
            raise TraceError(f"{path}:{line}: a {num}-GPU pod must ask for whole GPUs (gpu_milli 1000)")
        pods.append(TracePod(row["name"], num, milli))
    if not pods:
        raise TraceError(f"{path}: no GPU pods")
    return pods


def pod_list_path(trace_dir: Path, trace: str) -> Path:
    """`default` → openb_pod_list_default.csv; a path is taken as is."""
    if trace.endswith(".csv") or os.sep in trace:
        return Path(trace)
    return trace_dir / f"openb_pod_list_{trace}.csv"


def to_request(pod: TracePod, gpu_memory_mib: int) -> Request:
    """Memory-ceil mapping (M1): a share of the GPU's memory, or whole GPUs."""
    if pod.num_gpu == 1 and pod.gpu_milli < 1000:
        mib = math.ceil(pod.gpu_milli * gpu_memory_mib / 1000)
        container = ContainerRequest("main", 0, False, 1, memory_mib=mib)
    else:
        container = ContainerRequest("main", 0, False, pod.num_gpu, memory_percent=100)
    return Request((container,), mode=Mode.MIG)
