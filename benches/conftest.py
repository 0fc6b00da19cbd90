"""Benchmark collection and the end-of-session summary.

``bench_*.py`` files here are collected as test modules (only when ``benches`` is given on
the command line: the project's ``testpaths`` is ``tests``, so ``pytest`` alone never runs
them). The summary prints the median per case and cluster size, the twin/compiled
speed-up, growth with cluster size, engine bytes per GPU and the targets.
"""

from __future__ import annotations

import os
from itertools import pairwise

import pytest

BUILD_TIMEOUT_S = 900  # building the 100,000-GPU cluster happens inside the first test using it

TARGET_SCAN_US = 100.0  # fits + scores over 10,000 GPUs
TARGET_RESERVE_US = 5.0  # reserve or release
TARGET_BYTES = 64  # engine bytes per GPU


_LOAD: dict[str, tuple[float, float, float]] = {}


def pytest_sessionstart(session):
    _LOAD["start"] = os.getloadavg()


def pytest_collect_file(file_path, parent):
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "only_gpus(*sizes): run this benchmark only on clusters of these sizes")
    if not config.pluginmanager.hasplugin("timeout"):
        config.addinivalue_line("markers", "timeout(seconds): per-test timeout (pytest-timeout)")


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        if not item.fspath.basename.startswith("bench_"):
            keep.append(item)
            continue
        only = item.get_closest_marker("only_gpus")
        spec = getattr(item, "callspec", None)
        if only and spec and "cluster" in spec.params and spec.params["cluster"][1] not in only.args:
            drop.append(item)
            continue
        item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT_S))
        keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _fmt(us: float | None) -> str:
    if us is None:
        return "-"
    return f"{us:,.1f}" if us < 10_000 else f"{us:,.0f}"


def pytest_terminal_summary(terminalreporter, config):
    bs = getattr(config, "_benchmarksession", None)
    if bs is None:
        return
    # (case, impl, gpus) -> median µs; and per-cluster info
    med: dict[tuple[str, str, int], float] = {}
    mean: dict[tuple[str, str, int], float] = {}
    info: dict[tuple[str, int], dict] = {}
    for b in bs.benchmarks:
        ex = b.extra_info or {}
        if "case" not in ex or not b.stats or not b.stats.data:
            continue
        med[(ex["case"], ex["impl"], ex["gpus"])] = b.stats.median * 1e6
        mean[(ex["case"], ex["impl"], ex["gpus"])] = b.stats.mean * 1e6
        info[(ex["impl"], ex["gpus"])] = ex
    if not med:
        return
    w = terminalreporter.write_line
    terminalreporter.section("hami engine benchmarks: median µs")
    cases = list(dict.fromkeys(c for c, _, _ in med))
    sizes = sorted({n for _, _, n in med})
    w(f"{'case':<30}{'GPUs':>9}{'compiled':>12}{'twin':>12}{'twin/compiled':>15}{'compiled mean':>15}")
    for case in cases:
        for n in sizes:
            c, t = med.get((case, "compiled", n)), med.get((case, "twin", n))
            if c is None and t is None:
                continue
            sp = f"{t / c:,.1f}x" if c and t else "-"
            w(f"{case:<30}{n:>9,}{_fmt(c):>12}{_fmt(t):>12}{sp:>15}{_fmt(mean.get((case, 'compiled', n))):>15}")

    w("")
    w("growth with cluster size (median ratio per 10x GPUs; 10.0 = linear) and ns per GPU:")
    for case in cases:
        if not case.startswith(("fit_and_score", "fits", "scores", "node_ids")):
            continue
        for impl in ("compiled", "twin"):
            pts = [(n, med[(case, impl, n)]) for n in sizes if (case, impl, n) in med]
            if len(pts) < 2:
                continue
            ratios = ", ".join(f"{b[0] // a[0]}x GPUs: {b[1] / a[1]:.1f}x" for a, b in pairwise(pts))
            per = ", ".join(f"{n:,}: {us * 1e3 / n:.1f}" for n, us in pts)
            w(f"  {case:<22} {impl:<9} {ratios}   ns/GPU {per}")

    w("")
    w("clusters (fill: seed 42, 60 % of MIG compute slices and of hami-core memory):")
    for (impl, n), ex in sorted(info.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        same = ex.get("same_state_as_compiled")
        w(
            f"  {impl:<9}{n:>8,} GPUs  nodes {ex['nodes']:,}  MIG/core GPUs {ex['mig_gpus']:,}/{ex['core_gpus']:,}"
            f"  occupancy MIG {ex['mig_occupancy']:.1%} core {ex['core_occupancy']:.1%}"
            f"  reserved {ex['fill_reserved']:,} rejected {ex['fill_rejected']:,} errors {ex['fill_errors']}"
            f"  build {ex['build_s']:.1f}s  kernels {ex['kernels']}"
            + ("" if same is None else f"  state == compiled: {same}")
        )
        for e in ex.get("fill_error_samples") or ():
            w(f"      fill error: {e}")
        if not ex.get("bookkeeping_matches_arrays", True):
            w("      WARNING: usage from decisions differs from usage read back from the arrays")
    if not any(ex.get("compiled_available", True) for ex in info.values()):
        w("  WARNING: the compiled kernels are not built; 'compiled' ran the pure-Python twin")

    start, end = _LOAD.get("start"), os.getloadavg()
    w(
        f"  cpus {os.cpu_count()}, load average at start {start[0]:.2f}, at end {end[0]:.2f}"
        " (other load on the machine inflates and scatters the timings)"
    )

    w("")
    w("targets (reported, not asserted):")
    bpg = {ex["engine_bytes_per_gpu"] for ex in info.values()}
    sbpg = {ex["state_bytes_per_gpu"] for ex in info.values()}
    w(
        f"  bytes per GPU: engine.gpu_array_bytes()/N = {sorted(bpg)}, state.bytes_per_gpu() = {sorted(sbpg)}"
        f"  (target <= {TARGET_BYTES}: {'met' if max(bpg | sbpg) <= TARGET_BYTES else 'MISSED'})"
    )
    for shape in ("1gpu", "4gpu"):
        v = med.get((f"fit_and_score {shape}", "compiled", 10_000))
        if v is not None:
            w(
                f"  fit_and_score {shape} over 10,000 GPUs: {_fmt(v)} µs"
                f"  (target <= {TARGET_SCAN_US:.0f}: {'met' if v <= TARGET_SCAN_US else 'MISSED'})"
            )
    f_, s_ = med.get(("fits 1gpu", "compiled", 10_000)), med.get(("scores 1gpu", "compiled", 10_000))
    if f_ is not None and s_ is not None:
        w(
            f"  fits + scores (two calls) 1gpu over 10,000 GPUs: {_fmt(f_ + s_)} µs"
            f"  (target <= {TARGET_SCAN_US:.0f}: {'met' if f_ + s_ <= TARGET_SCAN_US else 'MISSED'})"
        )
    for case in cases:
        if case.startswith(("reserve ", "release ")):
            vals = [med[(case, "compiled", n)] for n in sizes if (case, "compiled", n) in med]
            worst = max(vals)
            w(
                f"  {case:<22} compiled worst median {_fmt(worst)} µs"
                f"  (target <= {TARGET_RESERVE_US:.0f}: {'met' if worst <= TARGET_RESERVE_US else 'MISSED'})"
            )
