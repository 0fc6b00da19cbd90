"""Read-only views of the engine's state for reports (metrics, `hami inspect`); never on the hot path."""

from __future__ import annotations

from hami._core import state as S


def geometry_slots(engine, gpu_uuid: str) -> list[tuple[str, bool]] | None:
    """The GPU's current geometry as HAMi v2.5–v2.9 print it: one `(<profile>-<slot>, in use)`
    per instance slot of the earliest allowed geometry (config order) that holds the GPU's
    in-use instances, slots numbered through the geometry flattened in config order (for
    `2g×3 + 1g` the 1g slot is `1g.10gb-3`). None when the GPU is not MIG, its policy has no
    geometries, or its instances, idle ones included, lie inside none of them (adopted layouts,
    or idle instances of another cut next to the one in use)."""
    row = engine._rows.get(gpu_uuid)
    if row is None or engine.state.g_kind[row] != S.MIG:
        return None
    tb = engine.tables
    inuse_layout = int(engine.state.g_inuse[row])
    ok = int(tb.geo_ok[inuse_layout])
    m = int(engine.state.g_model[row])
    t = tb.models[m]
    if not ok or not t.geometries:
        return None
    g = (ok & -ok).bit_length() - 1
    inuse = int(tb.slotset[inuse_layout])
    idle = int(tb.slotset[int(engine.state.g_idle[row])])
    reals = t.realisations[g]
    # the realisation must hold the idle instances too: slots of a geometry the GPU is not cut to
    # would name instances that do not exist (the GPU's real instances are reported instead)
    chosen = next((r for r in reals if (inuse | idle) & ~r == 0), None)
    if chosen is None:
        return None
    out = []
    index = 0
    for p, count in t.geometries[g].items():
        slots = sorted((k for k in range(len(t.slots)) if chosen >> k & 1 and t.slots[k][0] == p),
                       key=lambda k: t.slots[k][1])
        for k in slots[:count]:
            out.append((f"{t.profiles[p].name}-{index}", bool(inuse >> k & 1)))
            index += 1
    return out
