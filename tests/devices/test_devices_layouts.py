"""Whole-GPU layouts: legality, the reference §A.6 counts, determinism, arrangement."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hami.devices import catalog, layouts

A100_40 = catalog.BY_KEY["A100-SXM4-40GB"].mig
A30 = catalog.BY_KEY["A30"].mig
EIGHT = [m for m in catalog.MIG_MODELS if m.mig.memory_slices == 8]
FOUR = [m for m in catalog.MIG_MODELS if m.mig.memory_slices == 4]

# Reference §A.6, written with A100-40GB names (1gx2 = the double-memory 1g.10gb).
SHORT = {
    "1g": "1g.5gb",
    "1gx2": "1g.10gb",
    "2g": "2g.10gb",
    "3g": "3g.20gb",
    "4g": "4g.20gb",
    "7g": "7g.40gb",
}
REFERENCE_MAXIMAL = """
7g | 4g+3g | 3g+2g+2g | 3g+2g+1g+1g | 3g+1g*4 | 4g+2g+1g | 4g+2g+1gx2 | 4g+1g*3 | 4g+1g*2+1gx2
2g*3+1g | 2g*3+1gx2 | 2g*2+1g*3 | 2g*2+1g*2+1gx2 | 2g+1g*5 | 2g+1g*4+1gx2 | 1g*7 | 1g*6+1gx2
3g*2 | 4g+1gx2*2 | 3g+2g+1gx2 | 3g+1g*2+1gx2 | 2g*2+1gx2*2 | 2g+1g*2+1gx2*2 | 1g*4+1gx2*2
3g+1gx2*2 | 2g+1gx2*3 | 1g*2+1gx2*3
1gx2*4
"""


def _parse(text: str) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for term in text.strip().split("+"):
        name, _, times = term.partition("*")
        counts[SHORT[name]] += int(times or 1)
    return dict(counts)


def _key(counts: dict[str, int]) -> frozenset:
    return frozenset(counts.items())


@pytest.mark.parametrize("model", EIGHT, ids=lambda m: m.key)
def test_eight_slice_counts(model):
    assert len(layouts.valid_layouts(model.mig, include_empty=False)) == 77
    assert len(layouts.maximal_layouts(model.mig)) == 28


@pytest.mark.parametrize("model", FOUR, ids=lambda m: m.key)
def test_four_slice_counts(model):
    assert len(layouts.valid_layouts(model.mig, include_empty=False)) == 9
    assert len(layouts.maximal_layouts(model.mig)) == 4


def test_maximal_layouts_equal_the_reference_table():
    expected = {_key(_parse(t)) for line in REFERENCE_MAXIMAL.strip().splitlines() for t in line.split("|")}
    assert len(expected) == 28
    assert {_key(c) for c in layouts.maximal_layouts(A100_40)} == expected


def test_four_slice_maximal_layouts():
    got = {_key(c) for c in layouts.maximal_layouts(A30)}
    expected = [{"4g.24gb": 1}, {"2g.12gb": 2}, {"2g.12gb": 1, "1g.6gb": 2}, {"1g.6gb": 4}]
    assert got == {_key(c) for c in expected}


def test_empty_layout_is_included_first():
    assert layouts.positioned_layouts(A100_40)[0] == ()
    assert layouts.valid_layouts(A100_40)[0] == {}
    assert () not in layouts.positioned_layouts(A100_40, include_empty=False)
    assert len(layouts.valid_layouts(A100_40)) == 78


@pytest.mark.parametrize("model", catalog.MIG_MODELS, ids=lambda m: m.key)
def test_positioned_layouts_are_legal_and_distinct(model):
    spec = model.mig
    found = layouts.positioned_layouts(spec, spec.profiles)
    assert len(found) == len(set(found))
    for layout in found:
        occupied = 0
        counts: Counter[str] = Counter()
        for name, start in layout:
            profile = spec.profile(name)
            assert start in profile.placements
            assert profile.mask(start) & occupied == 0
            occupied |= profile.mask(start)
            counts[name] += 1
        assert all(counts[n] <= spec.profile(n).instance_cap for n in counts)
        assert sum(spec.profile(n).compute_slices * c for n, c in counts.items()) <= spec.compute_slices
        assert len(layout) <= spec.max_instances
        assert [s for _, s in layout] == sorted(s for _, s in layout)
        assert layouts.layout_mask(spec, layout) == occupied


def test_plus_me_substitutes_for_one_plain_1g():
    with_me = layouts.valid_layouts(A100_40, ["1g.5gb", "1g.5gb+me"])
    assert {"1g.5gb": 6, "1g.5gb+me": 1} in with_me
    assert not any(c.get("1g.5gb+me", 0) > 1 for c in with_me)


def test_results_are_deterministic_and_fresh_copies():
    first = layouts.valid_layouts(A100_40)
    first[0]["7g.40gb"] = 99  # callers may mutate what they get
    assert layouts.valid_layouts(A100_40)[0] == {}
    assert layouts.positioned_layouts(A100_40) == layouts.positioned_layouts(A100_40)


def test_sorting_order():
    found = layouts.positioned_layouts(A30)
    sizes = [len(layout) for layout in found]
    assert sizes == sorted(sizes)
    valid = layouts.valid_layouts(A30)
    assert [sum(c.values()) for c in valid] == sorted(sum(c.values()) for c in valid)


def test_profile_selection_by_name_and_unknown():
    assert layouts.valid_layouts(A30, ["4g.24gb"]) == [{}, {"4g.24gb": 1}]
    with pytest.raises(KeyError, match="unknown MIG profile"):
        layouts.valid_layouts(A30, ["3g.18gb"])


def test_arrange_and_is_valid():
    spec = catalog.BY_KEY["A100-SXM4-80GB"].mig
    layout = layouts.arrange(spec, {"3g.40gb": 1, "2g.20gb": 1, "1g.10gb": 2})
    assert layout is not None and sorted(n for n, _ in layout) == ["1g.10gb", "1g.10gb", "2g.20gb", "3g.40gb"]
    assert layouts.is_valid(spec, {"7g.80gb": 1})
    assert layouts.is_valid(spec, {})
    assert not layouts.is_valid(spec, {"2g.20gb": 4})
    assert not layouts.is_valid(spec, {"4g.40gb": 1, "3g.40gb": 1, "1g.10gb": 1})
    assert not layouts.is_valid(spec, {"1g.10gb": 7, "1g.10gb+me": 1})
    assert layouts.is_valid(spec, {"1g.10gb": 6, "1g.10gb+me": 1})
    assert not layouts.is_valid(spec, {"1g.10gb": -1})


def test_slices_used():
    assert layouts.compute_slices_used(A100_40, {"3g.20gb": 1, "1g.10gb": 2}) == 5
    assert layouts.memory_slices_used(A100_40, {"3g.20gb": 1, "1g.10gb": 2}) == 8


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_sub_multiset_of_a_valid_layout_is_valid(data):
    spec = catalog.BY_KEY["H100-SXM5-80GB"].mig
    layout = data.draw(st.sampled_from(layouts.positioned_layouts(spec, spec.profiles)))
    keep = data.draw(st.lists(st.booleans(), min_size=len(layout), max_size=len(layout)))
    subset = Counter(name for (name, _), k in zip(layout, keep) if k)
    assert layouts.is_valid(spec, subset)
    maximal = [Counter(c) for c in layouts.maximal_layouts(spec, spec.base_profiles)]
    base_subset = Counter({n: c for n, c in subset.items() if spec.profile(n).is_base})
    assert any(all(m[n] >= c for n, c in base_subset.items()) for m in maximal)
