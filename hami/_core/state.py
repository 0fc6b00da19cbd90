"""Cluster state as flat arrays (one row per GPU, one per node) and per-call request arrays.

Both kernel implementations (the Cython one and ``reference.py``) read exactly these
arrays; only ``engine.py`` writes them. A node's GPUs occupy a contiguous block of rows.
"""

from __future__ import annotations

import threading

import numpy as np

from hami._core.tables import MAX_PROFILES, MAX_SLOTS, PolicyTables

# g_kind values
DEAD, CORE, MIG = 0, 1, 2
# g_flags bits
UNHEALTHY, CORDONED = 1, 2

MAX_NODE_GPUS = 64  # the kernels' per-node scratch size

POLICY_IDS = {
    "fragmentation-aware": 0,
    "hami-legacy": 1,
    "hami-v2.10": 2,
    "first-fit": 3,
    "best-fit": 4,
    "static": 5,
}
FRAGMENTATION_AWARE, HAMI_LEGACY, HAMI_V210, FIRST_FIT, BEST_FIT, STATIC = range(6)
# our policies plan a pod's devices together, largest first, whatever the container order;
# the HAMi baselines and static place containers one by one in order, as HAMi does
JOINT_POLICIES = (FRAGMENTATION_AWARE, FIRST_FIT, BEST_FIT)
# policies that never seek an idle instance (they take the first or their own slot, reuse or not)
IDLE_BLIND = (FIRST_FIT, HAMI_LEGACY, HAMI_V210)
SEARCH_BUDGET = 4096  # joint-search visits per node before a pod is refused there

WEIGHT_SCALE = 1_000_000  # profile-mix weights are integers summing to this
# node scores: the kernels rank a placement by a fine integer (higher is better), which
# ``fit_score`` then normalises over the call's fitting candidates (reference.Kernels.fit_score)
# fragmentation-aware slot cost = loss × TIE + tie-breaks (the GPU's crowding, the profile,
# the GPU's slack after: 4, 3 and 4 bits)
TIE_BITS = 11
TIE = 1 << TIE_BITS
COST_CAP = 40_000  # cost units (‰ of a GPU's weighted capacity; best-fit's own) beyond this tie
MIG_FIRST = 1 << 30  # the unified pool: any MIG placement ranks above any hami-core share
NO_COST = np.iinfo(np.int64).max

GPU_FIELDS = {
    # name: dtype — the per-GPU engine arrays (bytes per GPU = sum of itemsizes)
    "g_node": np.int32,
    "g_kind": np.uint8,
    "g_flags": np.uint8,
    "g_type": np.int16,  # index into Engine's distinct GPU type strings (filters)
    "g_model": np.int16,  # MIG table model id, -1 for hami-core
    "g_inuse": np.int32,  # global layout id of instances in use (MIG)
    "g_idle": np.int32,  # global layout id of idle realised instances (MIG)
    "g_split": np.uint16,
    "g_slots": np.uint16,  # tasks on a hami-core GPU
    "g_mem": np.int32,  # total MiB (hami-core)
    "g_used_mem": np.int32,
    "g_cores": np.uint16,
    "g_used_cores": np.uint16,
    # derived, kept equal to the formulas in reference.py by Engine._touch (the compiled
    # one-pass kernel reads them instead of dividing per GPU):
    "g_usage": np.uint16,  # usage ‰: MIG compute slices in use, hami-core memory in use
    "g_order": np.int32,  # hami-core GPU order score: tasks ‰ + memory ‰ + cores ‰
}

NODE_FIELDS = {
    "n_first": np.int32,
    "n_count": np.int32,
    # bumped by the engine after any change to the node's rows: memoised per-request
    # results (RequestArrays.memo) are valid while it holds
    "n_version": np.int64,
}


def bytes_per_gpu() -> int:
    return sum(np.dtype(t).itemsize for t in GPU_FIELDS.values())


class State:
    """Growable arrays; ``rows``/``nodes`` are the used lengths."""

    def __init__(self, gpu_capacity: int = 64, node_capacity: int = 16) -> None:
        self.rows = 0
        self.nodes = 0
        self.epoch = 0  # bumped when the policy's cost tables are recomputed
        for name, dtype in GPU_FIELDS.items():
            setattr(self, name, np.zeros(gpu_capacity, dtype))
        for name, dtype in NODE_FIELDS.items():
            setattr(self, name, np.zeros(node_capacity, dtype))

    def grow_rows(self, need: int) -> bool:
        """Make room for ``need`` more rows; True when arrays were reallocated."""
        return self._grow(GPU_FIELDS, self.rows, need)

    def grow_nodes(self, need: int) -> bool:
        return self._grow(NODE_FIELDS, self.nodes, need)

    def _grow(self, fields: dict, used: int, need: int) -> bool:
        cap = len(getattr(self, next(iter(fields))))
        if used + need <= cap:
            return False
        new = max(cap * 2, used + need)
        for name in fields:
            old = getattr(self, name)
            arr = np.zeros(new, old.dtype)
            arr[:used] = old[:used]
            setattr(self, name, arr)
        return True

    def gpu_array_bytes(self) -> int:
        return sum(getattr(self, name)[: self.rows].nbytes for name in GPU_FIELDS)


class Dynamic:
    """Policy state that changes between refreshes: profile-mix weights and the best
    candidate per (layout, memory class) they imply."""

    def __init__(self, tables: PolicyTables) -> None:
        n_layouts = len(tables.slotset)
        n_models = len(tables.n_slots)
        self.wg = np.zeros((n_models, MAX_PROFILES), np.int64)  # weight × compute slices
        self.bcost = np.full((n_layouts, MAX_PROFILES), NO_COST, np.int64)
        self.bslot = np.full((n_layouts, MAX_PROFILES), -1, np.int8)


class RequestArrays:
    """A Request converted once per call (STYLE §6.11): only containers that ask for GPUs."""

    def __init__(self, n_ctr: int, n_models: int, n_types: int) -> None:
        self.n_ctr = n_ctr
        self.ctr_index = np.zeros(n_ctr, np.int32)  # position in Request.containers
        self.ctr_order = np.arange(n_ctr, dtype=np.int32)  # planning order of the containers
        self.ctr_count = np.zeros(n_ctr, np.int32)
        self.ctr_mem = np.zeros(n_ctr, np.int32)  # MiB, 0 when a percentage
        self.ctr_pct = np.zeros(n_ctr, np.int32)
        self.ctr_cores = np.zeros(n_ctr, np.int32)
        self.ctr_cls = np.zeros((n_ctr, max(n_models, 1)), np.int8)  # memory class per MIG model
        self.type_ok = np.ones(max(n_types, 1), np.uint8)
        self.row_ok = np.zeros(0, np.uint8)  # empty: no uuid filter
        self.allow_mig = True
        self.allow_core = True
        self.gpu_binpack = True
        self.node_binpack = True
        self.lock = threading.Lock()
        self._memo: tuple | None = None
        self.view = None  # the compiled kernels' C view of these arrays, made on first use
        self.index: list[int] = []  # ctr_index as a list (mapping picks back to containers)
        self.observe: list[tuple[int, list[int]]] = []  # (count, classes) per container, for the mix

    def memo(self, n_nodes: int, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per node: the version its cached (code, reason, score) was computed at (-1: none).

        A filter touches every node, but between two filters only the nodes a bind or an
        agent report changed need planning again; the rest answer from here. Reset when the
        cost tables change (``epoch``) or the cluster outgrew the arrays."""
        memo = self._memo
        if memo is None or memo[0] != epoch or len(memo[1]) < n_nodes:
            size = max(n_nodes, 16)
            memo = self._memo = (epoch, np.full(size, -1, np.int64), np.zeros(size, np.uint8),
                                 np.zeros(size, np.uint32), np.zeros(size, np.int32))
        return memo[1], memo[2], memo[3], memo[4]


assert MAX_SLOTS <= 32 and MAX_PROFILES <= 8
