"""The soak as a benchmark: one run of `hami.sim.soak` (hollow nodes, `hami scheduler` as a process,
the kube-scheduler driver), its figures in `extra_info` and in `bench-results/soak-bench/`.

    make bench   # or: pytest benches/bench_soak.py --benchmark-only
    HAMI_SOAK_NODES=1250 HAMI_SOAK_MINUTES=60 pytest benches/bench_soak.py --benchmark-only

Defaults: 1,250 nodes x 8 GPUs (10,000 GPUs) for 10 minutes. Targets (reported, not asserted,
as every benchmark here): filter median ≤ 2 ms and p99 ≤ 10 ms in every steady minute, scheduler
memory growth ≤ 5 %/hour after warm-up; the invariants are asserted (a violation is a bug, not a
slow machine). docs/soak.md has the figures of the full runs.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from hami.sim.soak import Soak, SoakConfig, growth_per_hour

NODES = int(os.environ.get("HAMI_SOAK_NODES", "1250"))
MINUTES = float(os.environ.get("HAMI_SOAK_MINUTES", "10"))


@pytest.mark.timeout(int(MINUTES * 60 * 3 + 900))
def test_soak(benchmark) -> None:
    out = Path("bench-results") / "soak-bench"
    config = SoakConfig(nodes=NODES, minutes=MINUTES, warmup_min=MINUTES / 2, out=out)
    result = benchmark.pedantic(lambda: Soak(config).run(), rounds=1, iterations=1, warmup_rounds=0)
    steady = [r for r in result.rows if r["phase"] == "steady"] or result.rows

    def worst(key: str) -> float:
        values = [r[key] for r in steady if not math.isnan(r[key])]
        return max(values) if values else float("nan")

    benchmark.extra_info.update({
        "nodes": NODES, "minutes": MINUTES, "pods_per_s_offered": result.rates["pods_per_s"],
        "filter_srv_p50_ms_worst_minute": worst("filter_srv_p50_ms"),
        "filter_srv_p99_ms_worst_minute": worst("filter_srv_p99_ms"),
        "filter_rt_p50_ms_worst_minute": worst("filter_rt_p50_ms"),
        "filter_rt_p99_ms_worst_minute": worst("filter_rt_p99_ms"),
        "sched_rss_mib_max": worst("sched_rss_mib"), "growth_pct_per_hour": growth_per_hour(result.rows),
        "loadavg_max": max((r["loadavg_1m"] for r in result.rows), default=float("nan")),
        "counts": result.counts, "invariants": {k: v for k, v in result.invariants.items() if k != "violations"},
        "summary": str(out / "summary.md"),
    })
    assert result.ok, result.invariants["violations"][:20]
