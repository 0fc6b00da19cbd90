"""Properties of the MIG part of the view, over every legal A100-80GB layout with each instance in use
or idle: the slice map and free slices are exactly what the instances leave uncovered, and every
start offered for a profile is a legal placement that is honest about what it costs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from hami.api import codecs, names
from hami.devices import find_model, positioned_layouts
from hami.inspect.collect import build_view
from tests.inspect.conftest import idle, in_use, mig_devices
from tests.scheduler.conftest import node_body

MODEL = find_model("A100-SXM4-80GB")
SPEC = MODEL.mig
LAYOUTS = positioned_layouts(SPEC, SPEC.base_profiles)
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def cover(profile: str, start: int) -> set[int]:
    return set(range(start, start + SPEC.profile(profile).memory_slices))


@given(layout=st.sampled_from(LAYOUTS), states=st.lists(st.booleans(), min_size=8, max_size=8))
def test_slices_and_fits_agree_with_the_instances(layout, states) -> None:
    placed = [(name, start, busy) for (name, start), busy in zip(layout, states)]
    report = [in_use("GPU-p-0", name, start, SPEC.profile(name).memory_slices, f"default/p{i}", gi=i + 1)
              if busy else idle("GPU-p-0", name, start, SPEC.profile(name).memory_slices,
                                NOW - timedelta(minutes=i), gi=i + 1)
              for i, (name, start, busy) in enumerate(placed)]
    node = node_body("p", mig_devices("p", 1),
                     **{names.NODE_MIG_INSTANCES: codecs.encode_node_mig_instances(report)})
    (gpu,) = build_view([node], [], now=NOW).nodes[0].gpus

    busy_cover = set().union(*(cover(n, s) for n, s, b in placed if b))
    idle_cover = set().union(*(cover(n, s) for n, s, b in placed if not b))
    assert gpu.free_slices == tuple(s for s in range(8) if s not in busy_cover | idle_cover)
    assert gpu.slices == "".join("#" if s in busy_cover else "~" if s in idle_cover else "." for s in range(8))
    assert sorted((i.profile, i.start, i.state) for i in gpu.instances) == sorted(
        (n, s, "in-use" if b else "idle") for n, s, b in placed)

    idle_at = {(n, s) for n, s, b in placed if not b}
    for fit in gpu.fits:
        assert fit.more >= 1 and fit.starts
        for start, how in fit.starts:
            assert start in SPEC.profile(fit.profile).placements
            slices = cover(fit.profile, start)
            assert not slices & busy_cover, (fit, placed)  # never through a running instance
            if how == "free":
                assert not slices & idle_cover
            elif how == "reuse":
                assert (fit.profile, start) in idle_at
            else:
                assert how == "reclaim" and slices & idle_cover and (fit.profile, start) not in idle_at
    if not busy_cover:  # nothing runs: every base profile can be had somewhere
        assert {f.profile for f in gpu.fits} == {p.name for p in SPEC.base_profiles}
