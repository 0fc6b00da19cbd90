"""Per-model layout-state tables: the precomputed geometry the kernels look up.

A MIG GPU's state is a *layout id*: one of its model's enumerated positioned layouts
(which base profile sits at which memory-slice start). Each GPU holds two: the layout of
the instances in use (reserved by pods, or realised and busy) and the layout of the idle
realised instances. Everything the hot path needs is a lookup indexed by layout id:

- ``add[L, k]``: the layout after placing slot ``k`` (profile, start) into ``L``, or -1.
- ``remove[L, k]``: the layout after taking slot ``k`` out of ``L``, or -1.
- ``cand[L, c]``: slot bitmask a request of memory class ``c`` may take in ``L``, under the
  policy's rules (geometry semantics for ours, HAMi's for the baselines).
- ``cnt[L, p]``: how many more instances of profile ``p`` fit in ``L`` inside some allowed
  geometry (positionally, for a layout inside none): the future capacity the
  fragmentation-aware policy protects.
- ``chain[L, c]``: the most devices of memory class ``c`` that ``L`` can still take one after
  the other through ``cand``. GPUs are independent, so a container of ``n`` such devices fits
  on a node exactly when the chains of its GPUs add up to ``n``: planning looks ahead with it
  instead of backtracking.

Layout ids are global across models (each model owns a contiguous id range), so one set of
flat arrays serves the whole cluster. ``mask & occupied == 0`` is how the tables are built;
the kernels never test overlap themselves.

A *memory class* ``c`` is the index of the smallest base profile (sorted by the memory a
request is matched against, then compute slices) whose size holds the request; every profile
from ``c`` on is acceptable. Our policies match against nominal sizes (ARCHITECTURE §7 memory
rule); the HAMi baselines match as HAMi does (NVML's sizes, percentages of the GPU's memory),
unless asked to use ours so that a comparison isolates placement.

``hami-legacy`` keeps the template a GPU was cut to for as long as the GPU is busy, as HAMi's
legacy scheduler does (the template index travels in its pods' annotations). The template is
part of the layout id: a busy layout that lies inside several templates has one id per
template (``ModelTables.tagged``), all with the same slots, so the kernels stay lookups.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from hami.devices import geometry, layouts
from hami.devices.config import NvidiaConfig
from hami.devices.models import GpuModel, MigProfile

log = logging.getLogger(__name__)

MAX_SLOTS = 32  # slot bitmasks are uint32
MAX_PROFILES = 8  # memory classes / profiles per model

POLICIES = ("fragmentation-aware", "hami-legacy", "hami-v2.10", "first-fit", "best-fit", "static")
GEOMETRY_POLICIES = ("fragmentation-aware", "first-fit", "best-fit")
HAMI_POLICIES = ("hami-legacy", "hami-v2.10")  # HAMi's own rules: memory matching, GPU order


def _base_equivalent(model: GpuModel, name: str) -> MigProfile:
    """The base profile with the same slice shape (``1g.10gb+me`` -> ``1g.10gb``)."""
    assert model.mig is not None
    prof = model.mig.profile(name)
    if prof.is_base:
        return prof
    for base in model.mig.base_profiles:
        if (base.compute_slices, base.memory_slices) == (prof.compute_slices, prof.memory_slices):
            return base
    raise KeyError(f"{model.key}: profile {name} has no base profile of the same shape")


@dataclass
class ModelTables:
    """One model's local tables (local layout ids 0..n-1; 0 is the empty layout)."""

    model: GpuModel
    profiles: list[MigProfile]  # base profiles by (matching MiB, compute slices)
    nominal: list[int]  # MiB a request is matched against, per profile (nominal for our policies)
    slots: list[tuple[int, int]]  # (profile index, start), sorted
    slot_mask: list[int]  # memory-slice mask per slot
    layouts: list[int]  # slot-set bitmask per layout
    index: dict[int, int] = field(default_factory=dict)  # slot-set -> layout id
    geometries: list[dict[int, int]] = field(default_factory=list)  # profile index -> count
    realisations: list[list[int]] = field(default_factory=list)  # per geometry: slot-sets
    slot_cache: dict[tuple[str, int], int] = field(default_factory=dict)  # (profile, start) -> slot
    percent_of: int = 0  # MiB a percentage is of (the largest profile; HAMi: the GPU's memory)
    # hami-legacy: per geometry, its slots in the order HAMi walks the template, and the extra
    # layout ids (geometry, slot-set) of busy layouts whose template is not their first one
    template_order: list[list[int]] = field(default_factory=list)
    tagged: list[tuple[int, int]] = field(default_factory=list)

    @property
    def n_layouts(self) -> int:
        """Positioned layouts (one id per slot-set)."""
        return len(self.layouts)

    @property
    def n_ids(self) -> int:
        """Layout ids of the model: the positioned layouts, then the template-tagged ones."""
        return len(self.layouts) + len(self.tagged)

    def profile_index(self, name: str) -> int:
        base = _base_equivalent(self.model, name)
        return next(i for i, p in enumerate(self.profiles) if p.name == base.name)

    def slot_of(self, profile: str, start: int) -> int:
        """The slot of (profile, start); any name of a shape works (``+me`` maps to its base).
        Cached: agent reports and restarts look up thousands of instances."""
        k = self.slot_cache.get((profile, start))
        if k is None:
            k = self.slot_cache[(profile, start)] = self._slot_of(profile, start)
        return k

    def _slot_of(self, profile: str, start: int) -> int:
        p = self.profile_index(profile)
        try:
            return self.slots.index((p, start))
        except ValueError:
            raise KeyError(
                f"{self.model.key}: {self.profiles[p].name} cannot start at memory slice {start}; "
                f"legal starts are {self.profiles[p].placements}"
            ) from None

    def multiset(self, slotset: int) -> Counter[int]:
        return Counter(self.slots[k][0] for k in range(len(self.slots)) if slotset >> k & 1)

    def request_mib(self, memory_mib: int, percent: int) -> int:
        """ARCHITECTURE §7: absolute MiB as given; a percentage is of the largest profile (HAMi:
        of the GPU's memory, ``Totalmem × pct / 100``, so a whole GPU exceeds every profile)."""
        if memory_mib > 0:
            return memory_mib
        whole = self.percent_of or max(self.nominal)
        return -(-whole * max(percent, 0) // 100) if percent < 100 else whole

    def class_of(self, memory_mib: int, percent: int) -> int:
        """The memory class of a device request (memory_mib, or a percentage)."""
        return self.memory_class(self.request_mib(memory_mib, percent))

    def memory_class(self, mib: int) -> int:
        """Index of the smallest profile whose nominal size holds ``mib``; len(profiles) if none."""
        for i, nominal in enumerate(self.nominal):
            if nominal >= mib:
                return i
        return len(self.profiles)


def build_model_tables(model: GpuModel, config: NvidiaConfig | None, policy: str = "fragmentation-aware",
                       hami_memory: bool = True) -> ModelTables:
    """The model's slots and positioned layouts, with the policy's memory rule (module docstring)."""
    assert model.mig is not None, model.key
    hami = policy in HAMI_POLICIES and hami_memory
    if hami:
        nominal_by_name = geometry.hami_matching_memory(model, config, legacy=policy == "hami-legacy")
    else:
        nominal_by_name = geometry.nominal_memory(model, config)
    profiles = sorted(
        model.mig.base_profiles, key=lambda p: (nominal_by_name[p.name], p.compute_slices, p.memory_slices)
    )
    if len(profiles) > MAX_PROFILES:
        raise ValueError(f"{model.key}: more than {MAX_PROFILES} base profiles")
    slots = [(i, s) for i, p in enumerate(profiles) for s in sorted(p.placements)]
    if len(slots) > MAX_SLOTS:
        raise ValueError(f"{model.key}: more than {MAX_SLOTS} placements")
    slot_mask = [profiles[p].mask(s) for p, s in slots]
    slot_id = {(profiles[p].name, s): k for k, (p, s) in enumerate(slots)}
    tables = ModelTables(model, profiles, [nominal_by_name[p.name] for p in profiles], slots, slot_mask, [])
    tables.percent_of = model.memory_mib if hami else max(tables.nominal)
    for placed in layouts.positioned_layouts(model.mig, profiles):
        slotset = 0
        for name, start in placed:
            slotset |= 1 << slot_id[(name, start)]
        tables.index[slotset] = len(tables.layouts)
        tables.layouts.append(slotset)
    assert tables.layouts[0] == 0, "the empty layout must come first"
    return tables


def _realisations(t: ModelTables, wanted: dict[int, int]) -> list[int]:
    return [s for s in t.layouts if t.multiset(s) == Counter(wanted)]


def _set_geometries(t: ModelTables, geoms: list[dict[int, int]], fixed: bool) -> None:
    """Attach geometries; ``fixed`` keeps one realisation each (legacy, static)."""
    t.geometries = geoms
    t.realisations = []
    for g, wanted in enumerate(geoms):
        real = _realisations(t, wanted)
        if not real:
            log.warning("%s: geometry %d (%s) has no legal placement; ignored", t.model.key, g + 1, wanted)
        t.realisations.append(real[:1] if fixed else real)


def _geometry_dicts(t: ModelTables, geoms: list[geometry.Geometry]) -> list[dict[int, int]]:
    out = []
    for geom in geoms:
        counts: Counter[int] = Counter()
        for name, count in geom.counts:
            counts[t.profile_index(name)] += count
        out.append(dict(counts))
    return out


_ARRAY_SPECS = {
    # per-layout arrays: name -> (dtype, trailing shape, fill)
    "add": (np.int32, (MAX_SLOTS,), -1),
    "remove": (np.int32, (MAX_SLOTS,), -1),
    "cand": (np.uint32, (MAX_PROFILES,), 0),
    "tie": (np.int16, (MAX_SLOTS,), 0),  # fragmentation-aware tie-break of slot k in L (reference._slot_cost)
    "cnt": (np.int8, (MAX_PROFILES,), 0),
    "chain": (np.int8, (MAX_PROFILES,), 0),
    "slotset": (np.uint32, (), 0),
    "occupied": (np.uint32, (), 0),
    "used_compute": (np.int8, (), 0),
    "used_memory": (np.int8, (), 0),  # memory slices covered (popcount of occupied)
    "instances": (np.int8, (), 0),  # instances in the layout (popcount of slotset)
    "usage_pm": (np.int16, (), 0),  # used_compute * 1000 // the model's compute slices
    "geo_ok": (np.uint64, (), 0),
}
_MODEL_SPECS = {
    # per-model arrays: name -> (dtype, trailing shape, fill)
    "n_slots": (np.int32, (), 0),
    "n_profiles": (np.int32, (), 0),
    "compute_slices": (np.int32, (), 0),
    "memory_slices": (np.int32, (), 0),
    "slot_profile": (np.int8, (MAX_SLOTS,), -1),
    "slot_compute": (np.int8, (MAX_SLOTS,), 0),
    "slot_mask": (np.uint32, (MAX_SLOTS,), 0),
    "slot_rank": (np.int16, (MAX_SLOTS,), 0),
    "profile_compute": (np.int64, (MAX_PROFILES,), 0),
    "profile_memory": (np.int64, (MAX_PROFILES,), 0),
}


class PolicyTables:
    """Every registered MIG model's tables for one policy, concatenated into flat arrays.

    Models are added when a node first registers one (``add_model``); ids only grow, so
    layout ids held in the state stay valid. Local tables are cached by the model's
    structure (slice shapes, placements, geometries), so the 8-slice family is computed
    once whatever the product.
    """

    def __init__(self, config: NvidiaConfig | None, policy: str, hami_memory: bool = True) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown placement policy {policy!r}; choose one of {', '.join(POLICIES)}")
        self.config = config
        self.policy = policy
        self.hami_memory = hami_memory
        self.models: list[ModelTables] = []
        self.base: list[int] = []  # first global layout id per model (offset, as a list)
        self.offset = np.zeros(0, np.int32)
        self.layout_model = np.zeros(0, np.int16)
        for name, (dtype, shape, fill) in _ARRAY_SPECS.items():
            setattr(self, name, np.full((0, *shape), fill, dtype))
        for name, (dtype, shape, fill) in _MODEL_SPECS.items():
            setattr(self, name, np.full((0, *shape), fill, dtype))

    @property
    def n_layouts(self) -> int:
        return len(self.slotset)

    def model_id(self, key: str) -> int:
        for i, t in enumerate(self.models):
            if t.model.key == key:
                return i
        raise KeyError(key)

    def add_model(self, model: GpuModel) -> int:
        """The model's id, adding its tables on first use."""
        for i, t in enumerate(self.models):
            if t.model.key == model.key:
                return i
        t = build_model_tables(model, self.config, self.policy, self.hami_memory)
        local = _local_arrays(t, self.config, self.policy)
        base = self.n_layouts
        m = len(self.models)
        self.models.append(t)
        self.base.append(base)
        self.offset = np.append(self.offset, np.int32(base))
        self.layout_model = np.append(self.layout_model, np.full(t.n_ids, m, np.int16))
        for name, (_dtype, _shape, _fill) in _ARRAY_SPECS.items():
            arr = local[name]
            if name in ("add", "remove"):
                arr = np.where(arr >= 0, arr + base, -1).astype(np.int32)
            setattr(self, name, np.concatenate([getattr(self, name), arr]))
        for name in _MODEL_SPECS:
            setattr(self, name, np.concatenate([getattr(self, name), local[name][None]]))
        return m

    def local(self, layout: int) -> tuple[int, int]:
        m = int(self.layout_model[layout])
        return m, layout - int(self.offset[m])

    def layout_id(self, m: int, slotset: int) -> int:
        return int(self.offset[m]) + self.models[m].index[slotset]


def _structure_key(t: ModelTables, config, policy: str) -> tuple:
    shapes = tuple((p.compute_slices, p.memory_slices, p.instance_cap, tuple(p.placements)) for p in t.profiles)
    if policy == "static":
        geoms = _geometry_dicts(t, [geometry.balanced_layout(t.model)])
    elif policy == "hami-v2.10":
        allow = set(geometry.allowlisted_profiles(t.model, config))
        geoms = [{i: 1 for i, p in enumerate(t.profiles) if p.name in allow}]
    elif policy == "hami-legacy":  # order matters within a template: keep the entries as written
        geoms = [{i: (t.profile_index(name), count) for i, (name, count, _mib) in enumerate(tp.entries)}
                 for tp in geometry.hami_templates(t.model, config)]
    else:
        geoms = _geometry_dicts(t, list(geometry.allowed_geometries(t.model, config)))
    return (policy, t.model.mig.compute_slices, shapes, tuple(t.nominal), t.percent_of,
            tuple(tuple(sorted(g.items())) for g in geoms))


_LOCAL_CACHE: dict[tuple, tuple[dict[str, np.ndarray], list, list, list, list]] = {}


def _local_arrays(t: ModelTables, config, policy: str) -> dict[str, np.ndarray]:
    """The model's local tables, computed once per structure (geometries included)."""
    key = _structure_key(t, config, policy)
    cached = _LOCAL_CACHE.get(key)
    if cached is None:
        arrays = _compute_local(t, config, policy)
        _LOCAL_CACHE[key] = (arrays, t.geometries, t.realisations, t.template_order, t.tagged)
        return arrays
    arrays, t.geometries, t.realisations, t.template_order, t.tagged = cached
    return arrays


def _attach_geometries(t: ModelTables, config, policy: str) -> None:
    if policy == "static":
        _set_geometries(t, _geometry_dicts(t, [geometry.balanced_layout(t.model)]), fixed=True)
    elif policy == "hami-legacy":
        templates = geometry.hami_templates(t.model, config)
        geoms = []
        for tp in templates:
            counts: Counter[int] = Counter()
            for name, count, _mib in tp.entries:
                counts[t.profile_index(name)] += count
            geoms.append(dict(counts))
        _set_geometries(t, geoms, fixed=True)
        t.template_order = []
        for tp, reals in zip(templates, t.realisations, strict=True):
            order: list[int] = []
            if reals:  # each entry's slots in the realisation, by start, entries as written
                left = [k for k in range(len(t.slots)) if reals[0] >> k & 1]
                for name, count, _mib in tp.entries:
                    p = t.profile_index(name)
                    mine = [k for k in left if t.slots[k][0] == p][:count]
                    order += mine
                    left = [k for k in left if k not in mine]
            t.template_order.append(order)
    elif policy == "hami-v2.10":
        t.geometries, t.realisations = [], []
    else:
        _set_geometries(t, _geometry_dicts(t, list(geometry.allowed_geometries(t.model, config))), fixed=False)
    if len(t.geometries) > 64:
        log.warning("%s: only the first 64 allowed geometries are used", t.model.key)
        t.geometries, t.realisations = t.geometries[:64], t.realisations[:64]
        t.template_order = t.template_order[:64]
    if policy == "hami-legacy":
        t.tagged = _legacy_tagged(t)


def _legacy_tagged(t: ModelTables) -> list[tuple[int, int]]:
    """(template, slot-set) of every busy layout inside a template that is not the first one
    holding it: such a GPU needs its own id, or its template would be lost."""
    reals = [r[0] if r else None for r in t.realisations]
    out = []
    for g, r in enumerate(reals):
        if r is None:
            continue
        sub = r
        while sub:
            if _first_template(reals, sub) != g:
                out.append((g, sub))
            sub = (sub - 1) & r
    return sorted(out)


def _first_template(reals: list[int | None], slotset: int) -> int | None:
    for g, r in enumerate(reals):
        if r is not None and slotset & ~r == 0:
            return g
    return None


class _Local:
    """Attribute bag with the PolicyTables array names, for one model at offset 0."""


def _compute_local(t: ModelTables, config, policy: str) -> dict[str, np.ndarray]:
    pt = _Local()
    _attach_geometries(t, config, policy)
    n = t.n_ids
    for name, (dtype, shape, fill) in _ARRAY_SPECS.items():
        setattr(pt, name, np.full((n, *shape), fill, dtype))
    for name, (dtype, shape, fill) in _MODEL_SPECS.items():
        setattr(pt, name, np.full((1, *shape), fill, dtype))
    _fill_model(pt, 0, t, 0, config, policy)
    out = {name: getattr(pt, name) for name in _ARRAY_SPECS}
    out.update({name: getattr(pt, name)[0] for name in _MODEL_SPECS})
    return out


def _fill_model(pt: PolicyTables, m: int, t: ModelTables, base: int, config, policy: str) -> None:
    model = t.model
    assert model.mig is not None
    n_s, n_p = len(t.slots), len(t.profiles)
    pt.n_slots[m], pt.n_profiles[m] = n_s, n_p
    pt.compute_slices[m] = model.mig.compute_slices
    pt.memory_slices[m] = model.mig.memory_slices
    for k, (p, _start) in enumerate(t.slots):
        pt.slot_profile[m, k] = p
        pt.slot_compute[m, k] = t.profiles[p].compute_slices
        pt.slot_mask[m, k] = t.slot_mask[k]
    for p, prof in enumerate(t.profiles):
        pt.profile_compute[m, p] = prof.compute_slices
        pt.profile_memory[m, p] = prof.memory_slices

    # structural tables
    occupied = []
    for local, s in enumerate(t.layouts):
        g = base + local
        occ = 0
        for k in range(n_s):
            if s >> k & 1:
                occ |= t.slot_mask[k]
        occupied.append(occ)
        pt.slotset[g] = s
        pt.occupied[g] = occ
        pt.used_memory[g] = bin(occ).count("1")
        pt.instances[g] = bin(s).count("1")
        pt.used_compute[g] = sum(t.profiles[t.slots[k][0]].compute_slices for k in range(n_s) if s >> k & 1)
        pt.usage_pm[g] = int(pt.used_compute[g]) * 1000 // model.mig.compute_slices
    for local, s in enumerate(t.layouts):
        g = base + local
        for k in range(n_s):
            if s >> k & 1:
                pt.remove[g, k] = base + t.index[s & ~(1 << k)]
            elif not occupied[local] & t.slot_mask[k]:
                nxt = t.index.get(s | 1 << k)
                if nxt is not None:  # None: a profile's instance cap
                    pt.add[g, k] = base + nxt

    # geometry consistency: L fits inside geometry g iff L is a subset of a realisation of g
    geo_ok = [0] * t.n_layouts
    for gi, reals in enumerate(t.realisations):
        for r in reals:
            sub = r
            while True:  # every subset of r
                geo_ok[t.index[sub]] |= 1 << gi
                if sub == 0:
                    break
                sub = (sub - 1) & r
    for local in range(t.n_layouts):
        pt.geo_ok[base + local] = geo_ok[local]

    # future capacity per profile, inside the best allowed geometry
    for local, s in enumerate(t.layouts):
        have = t.multiset(s)
        for p in range(n_p):
            best = 0
            for gi, wanted in enumerate(t.geometries):
                if geo_ok[local] >> gi & 1:
                    best = max(best, wanted.get(p, 0) - have.get(p, 0))
            if policy == "hami-v2.10" or (policy in GEOMETRY_POLICIES and not geo_ok[local]):
                # no geometries, or a layout inside none (adopted): what still fits positionally
                best = _max_more(t, s, occupied[local], p)
            pt.cnt[base + local, p] = best

    if policy == "hami-legacy":
        _fill_legacy(pt, m, t, base)
    else:
        _fill_candidates(pt, m, t, base, occupied, geo_ok, config, policy)
    _fill_chains(pt, t, base)
    _fill_ties(pt, m, t, base)


def _fill_ties(pt, m: int, t: ModelTables, base: int) -> None:
    """tie[L, k]: after equal losses, the GPU already running more instances (15 − instances
    in L), then the smaller profile, then the GPU left with fewer free compute and memory
    slices (4, 3 and 4 bits; lower is better)."""
    free_c, free_m = t.model.mig.compute_slices, t.model.mig.memory_slices
    for local in range(t.n_ids):
        g = base + local
        crowd = 15 - min(int(pt.instances[g]), 15)
        for k in range(len(t.slots)):
            after = int(pt.add[g, k])
            if after < 0:
                continue
            slack = min(free_c - int(pt.used_compute[after]) + free_m - int(pt.used_memory[after]), 15)
            pt.tie[g, k] = crowd * 128 + t.slots[k][0] * 16 + slack


def _fill_legacy(pt, m: int, t: ModelTables, base: int) -> None:
    """HAMi's legacy scheduler (hami-behaviour §3.3). An idle GPU takes the first template (in
    order) with an entry that holds the request, and the first such slot in it; a busy GPU
    stays in the template it was cut to until its last instance ends, and takes the first free
    slot of that template, in template order, that holds the request. ``cand`` is that one
    slot; ``add``/``remove`` keep the template in the layout id (tagged ids for templates that
    are not a slot-set's first)."""
    n, n_s, n_p = t.n_layouts, len(t.slots), len(t.profiles)
    reals = [r[0] if r else None for r in t.realisations]
    tagged_id = {key: n + i for i, key in enumerate(t.tagged)}

    def canon(g: int | None, slotset: int) -> int:
        if slotset == 0:
            return 0
        if g is None or _first_template(reals, slotset) == g:
            return t.index[slotset]
        return tagged_id[(g, slotset)]

    for k in range(n_s):
        pt.slot_rank[m, k] = k
    for i, (_g, slotset) in enumerate(t.tagged):  # the same slots as the positioned layout
        src, dst = base + t.index[slotset], base + n + i
        for name in ("slotset", "occupied", "used_compute", "used_memory", "instances", "usage_pm", "geo_ok", "cnt"):
            getattr(pt, name)[dst] = getattr(pt, name)[src]
    idle_pick: dict[int, tuple[int, int]] = {}  # class -> (template, slot) on an idle GPU
    for c in range(n_p):
        for g, order in enumerate(t.template_order):
            k = next((k for k in order if t.slots[k][0] >= c), None)
            if k is not None:
                idle_pick[c] = (g, k)
                break
    idle_template: dict[int, int] = {}
    for g, k in idle_pick.values():
        idle_template.setdefault(k, g)
    legal = pt.add[base:base + n].copy()
    ids = [(s, _first_template(reals, s) if s else None) for s in t.layouts] + [(s, g) for g, s in t.tagged]
    for local, (s, g) in enumerate(ids):
        gid = base + local
        phys = t.index[s]
        for k in range(n_s):
            pt.add[gid, k] = pt.remove[gid, k] = -1
            if s >> k & 1:
                rest = s & ~(1 << k)
                pt.remove[gid, k] = base + canon(g, rest)
            elif legal[phys, k] >= 0:
                grown = s | 1 << k
                if g is not None and reals[g] >> k & 1:
                    pt.add[gid, k] = base + canon(g, grown)
                elif s == 0:
                    pt.add[gid, k] = base + canon(idle_template.get(k, _first_template(reals, grown)), grown)
                else:  # outside its template (a recorded decision, never a candidate)
                    pt.add[gid, k] = base + t.index[grown]
        for c in range(n_p):
            if s == 0:
                pick = idle_pick.get(c)
                pt.cand[gid, c] = 1 << pick[1] if pick else 0
            elif g is not None:
                k = next((k for k in t.template_order[g] if not s >> k & 1 and t.slots[k][0] >= c), None)
                pt.cand[gid, c] = 1 << k if k is not None else 0
            else:
                pt.cand[gid, c] = 0


def _fill_chains(pt, t: ModelTables, base: int) -> None:
    """chain[L, c] = max over candidate slots k of 1 + chain[add[L, k], c] (supersets first)."""
    n_s, n_p = len(t.slots), len(t.profiles)
    for local in sorted(range(t.n_ids), key=lambda i: -bin(int(pt.slotset[base + i])).count("1")):
        g = base + local
        for c in range(n_p):
            best = 0
            bits = int(pt.cand[g, c])
            for k in range(n_s):
                if bits >> k & 1:
                    best = max(best, 1 + int(pt.chain[int(pt.add[g, k]), c]))
            pt.chain[g, c] = best


def _max_more(t: ModelTables, s: int, occ: int, p: int) -> int:
    """How many more instances of profile ``p`` fit positionally (greedy by start is exact
    for equal-width aligned placements)."""
    n = 0
    for k, (pk, _start) in enumerate(t.slots):
        if pk == p and not occ & t.slot_mask[k]:
            occ |= t.slot_mask[k]
            n += 1
    return n


def _fill_candidates(pt, m, t: ModelTables, base, occupied, geo_ok, config, policy) -> None:
    n_s, n_p = len(t.slots), len(t.profiles)
    profile_slots = [sum(1 << k for k in range(n_s) if t.slots[k][0] == p) for p in range(n_p)]
    acceptable = [sum(profile_slots[p] for p in range(c, n_p)) for c in range(n_p)]
    rank = list(range(n_s))
    if policy == "hami-v2.10":
        allow = set(geometry.allowlisted_profiles(t.model, config))
        allowed_slots = sum(profile_slots[p] for p in range(n_p) if t.profiles[p].name in allow)
        acceptable = [a & allowed_slots for a in acceptable]
        # HAMi v2.10: smallest profile first; 1g and 3g from the high end, others from the low end
        order = sorted(
            range(n_s),
            key=lambda k: (
                t.slots[k][0],
                -t.slots[k][1] if t.profiles[t.slots[k][0]].compute_slices in (1, 3) else t.slots[k][1],
            ),
        )
        rank = [order.index(k) for k in range(n_s)]
    for k in range(n_s):
        pt.slot_rank[m, k] = rank[k]

    for local, s in enumerate(t.layouts):
        g = base + local
        legal = 0
        for k in range(n_s):
            if pt.add[g, k] >= 0:
                legal |= 1 << k
        if policy in GEOMETRY_POLICIES and not geo_ok[local]:
            # Instances placed outside every allowed geometry (by HAMi, by hand, by NVML's
            # automatic placement): geometries guide, they never strand, so every legal
            # placement next to them is a candidate; the GPU drains back as pods end.
            for c in range(n_p):
                pt.cand[g, c] = legal & acceptable[c]
        elif policy in GEOMETRY_POLICIES:
            allowed = 0
            for p in range(n_p):
                first = None
                for k in range(n_s):
                    if legal >> k & 1 and t.slots[k][0] == p:
                        ok = geo_ok[t.index[s | 1 << k]]
                        if ok:
                            low = (ok & -ok).bit_length() - 1
                            first = low if first is None else min(first, low)
                if first is None:
                    continue
                for k in range(n_s):
                    if legal >> k & 1 and t.slots[k][0] == p and geo_ok[t.index[s | 1 << k]] >> first & 1:
                        allowed |= 1 << k
            for c in range(n_p):
                pt.cand[g, c] = allowed & acceptable[c]
        elif policy == "hami-v2.10":
            for c in range(n_p):
                pt.cand[g, c] = legal & acceptable[c]
        else:  # static: one fixed realisation
            for c in range(n_p):
                pt.cand[g, c] = _fixed_candidates(t, s, legal & acceptable[c])


def _fixed_candidates(t: ModelTables, s: int, wanted: int) -> int:
    for r in (r[0] for r in t.realisations if r):  # the first realisation that contains s
        if s & ~r == 0:
            return (r & ~s) & wanted
    return 0
