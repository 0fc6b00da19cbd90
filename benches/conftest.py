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

from hami._core import state

BUILD_TIMEOUT_S = 900  # building the 100,000-GPU cluster happens inside the first test using it

TARGET_SCAN_US = 50.0  # fit_and_score over 10,000 GPUs, one node changed since the last call
TARGET_GROWTH = 12.0  # 100,000 GPUs at most this many times the 10,000 figure
TARGET_RESERVE_US = 10.0  # decide_and_reserve, 1-GPU MIG
TARGET_RELEASE_US = 5.0
TARGET_RESTART_S = 1.0  # a fresh engine fed 10,000 GPUs and 50,000 running pods
TARGET_REPORT_US = 50.0  # set_realised of one 8-GPU node holding 8 x 7 instances
TARGET_BYTES = 64  # state-array bytes per GPU


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
    low: dict[tuple[str, str, int], float] = {}
    dense: dict = {}
    for b in bs.benchmarks:
        ex = b.extra_info or {}
        if "case" not in ex or not b.stats or not b.stats.data:
            continue
        med[(ex["case"], ex["impl"], ex["gpus"])] = b.stats.median * 1e6
        mean[(ex["case"], ex["impl"], ex["gpus"])] = b.stats.mean * 1e6
        low[(ex["case"], ex["impl"], ex["gpus"])] = b.stats.min * 1e6
        if "nodes" in ex:
            info[(ex["impl"], ex["gpus"])] = ex
        else:
            dense.update(ex)
    if not med:
        return
    w = terminalreporter.write_line
    terminalreporter.section("hami engine benchmarks: median µs")
    cases = list(dict.fromkeys(c for c, _, _ in med))
    sizes = sorted({n for _, _, n in med})
    w(f"{'case':<32}{'GPUs':>9}{'compiled':>12}{'min':>10}{'twin':>12}{'twin/compiled':>15}{'compiled mean':>15}")
    for case in cases:
        for n in sizes:
            c, t = med.get((case, "compiled", n)), med.get((case, "twin", n))
            if c is None and t is None:
                continue
            sp = f"{t / c:,.1f}x" if c and t else "-"
            w(f"{case:<32}{n:>9,}{_fmt(c):>12}{_fmt(low.get((case, 'compiled', n))):>10}{_fmt(t):>12}{sp:>15}"
              f"{_fmt(mean.get((case, 'compiled', n))):>15}")

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
    if info and not any(ex.get("compiled_available", True) for ex in info.values()):
        w("  WARNING: the compiled kernels are not built; 'compiled' ran the pure-Python twin")

    start, end = _LOAD.get("start"), os.getloadavg()
    w(
        f"  cpus {os.cpu_count()}, load average at start {start[0]:.2f}, at end {end[0]:.2f}"
        " (other load on the machine inflates and scatters the timings)"
    )

    w("")
    w("targets (medians; reported, not asserted):")

    def verdict(value, target) -> str:
        return "met" if value <= target else "MISSED"

    sbpg = state.bytes_per_gpu()
    w(f"  state arrays: {sbpg} bytes per GPU (target <= {TARGET_BYTES}: {verdict(sbpg, TARGET_BYTES)})")
    for shape in ("1gpu", "4gpu"):
        v = med.get((f"fit_and_score {shape}", "compiled", 10_000))
        big = med.get((f"fit_and_score {shape}", "compiled", 100_000))
        twin = med.get((f"fit_and_score {shape}", "twin", 10_000))
        if v is not None:
            ratio = f", twin/compiled {twin / v:,.0f}x" if twin else ""
            w(f"  fit_and_score {shape} over 10,000 GPUs (one node changed): {_fmt(v)} µs, min "
              f"{_fmt(low.get((f'fit_and_score {shape}', 'compiled', 10_000)))}"
              f" (target <= {TARGET_SCAN_US:.0f}: {verdict(v, TARGET_SCAN_US)}{ratio})")
            if big is not None:
                w(f"  fit_and_score {shape} over 100,000 GPUs: {_fmt(big)} µs = {big / v:.1f}x the 10,000 figure"
                  f" (target <= {TARGET_GROWTH:.0f}x: {verdict(big / v, TARGET_GROWTH)})")
        cold = med.get((f"fit_and_score cold {shape}", "compiled", 10_000))
        if cold is not None:
            w(f"  fit_and_score cold {shape} over 10,000 GPUs (every node planned): {_fmt(cold)} µs (no target)")
    for case, target in (("reserve 1gpu mig", TARGET_RESERVE_US), ("release 1gpu mig", TARGET_RELEASE_US)):
        vals = [(n, med[(case, "compiled", n)]) for n in sizes if (case, "compiled", n) in med]
        if vals:
            n, worst = max(vals, key=lambda kv: kv[1])
            w(f"  {case:<22} compiled worst median {_fmt(worst)} µs (at {n:,} GPUs; min "
              f"{_fmt(low.get((case, 'compiled', n)))}) (target <= {target:.0f}: {verdict(worst, target)})")
    restart = med.get(("restart (nodes + assume_many)", "compiled", 10_000))
    if restart is not None:
        s_ = restart / 1e6
        w(f"  restart: 10,000 GPUs + 50,000 pods in {s_:.2f} s (nodes {dense.get('nodes_s', 0):.2f} s, assume_many "
          f"{dense.get('assume_s', 0):.2f} s) (target <= {TARGET_RESTART_S:.0f} s: {verdict(s_, TARGET_RESTART_S)})")
    report = med.get(("set_realised 8x7", "compiled", 10_000))
    if report is not None:
        w(f"  set_realised of one 8-GPU node, 8 x 7 instances, among 50,000 pods: {_fmt(report)} µs, min "
          f"{_fmt(low.get(('set_realised 8x7', 'compiled', 10_000)))} (target <= {TARGET_REPORT_US:.0f}: "
          f"{verdict(report, TARGET_REPORT_US)})")
    if "bytes_per_gpu" in dense:
        w(f"  engine memory (tracemalloc, everything: tables, maps, reservations): {dense['bytes_per_gpu']:,} bytes "
          f"per GPU, {dense['bytes_per_pod']:,} bytes per running pod")
