"""The soak (hami.sim.soak): a shortened run through every real component, its invariants, and the
arithmetic it reports (offered load, percentiles from the scheduler's histogram, memory growth)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from hami.sim.soak import (
    CORE_MIX,
    MIG_MIX,
    Pool,
    Soak,
    SoakConfig,
    Workload,
    fleet_specs,
    growth_per_hour,
    histogram,
    histogram_quantile,
)


@pytest.mark.timeout(400)  # 30 s of soak; starting the scheduler and the final check take longer on a busy machine
def test_a_short_soak_places_pods_through_the_real_scheduler_and_every_invariant_holds(tmp_path: Path) -> None:
    config = SoakConfig(nodes=12, minutes=0.5, sample_s=10, scrape_every=1, lifetime_median_min=0.2,
                        lifetime_sigma=0.5, patience_min=0.3, warmup_min=0.2, out=tmp_path)
    result = Soak(config).run()
    assert result.ok, result.invariants["violations"]
    assert result.invariants["live_pods"] > 0 and result.invariants["gpus"] == 12 * 8
    assert result.invariants["gpus_checked_against_live_scheduler"] == 12 * 8
    assert result.counts["submitted"] > 50 and result.counts["finished"] > 0 and result.counts["failed"] == 0
    rows = list(csv.DictReader((tmp_path / "timeseries.csv").open()))
    assert len(rows) == 3 and {r["phase"] for r in rows} == {"warmup", "steady"}
    assert sum(int(r["placed"]) for r in rows) > 50
    assert all(float(r["sched_rss_mib"]) > 20 for r in rows)
    assert all(not math.isnan(float(r["filter_srv_p50_ms"])) for r in rows)  # scraped every row here
    summary = (tmp_path / "summary.md").read_text()
    assert "Invariants: all hold" in summary and "pods/s" in summary
    assert (tmp_path / "timeseries.png").stat().st_size > 10_000


def test_the_arrival_rate_offers_the_asked_load_of_each_pool() -> None:
    specs = fleet_specs(1250)
    assert len(specs) == 1250 and len({s.name for s in specs}) == 1250
    gpus = {m: sum(s.gpus for s in specs if s.model.key == m) for m in {s.model.key for s in specs}}
    assert gpus == {"A100-SXM4-80GB": 3752, "H800-SXM5-80GB": 1872, "A800-SXM4-80GB": 1872, "A10": 2504}
    pools = [Pool("mig", 7496, MIG_MIX), Pool("hami-core", 2504, CORE_MIX)]
    workload = Workload(pools, SoakConfig(load=0.9, lifetime_median_min=40, lifetime_sigma=0.8))
    assert workload.mean_lifetime == pytest.approx(40 * 60 * math.exp(0.32))
    for pool, rate in zip(workload.pools, workload.rates):
        assert rate * workload.mean_lifetime * pool.mean_share == pytest.approx(0.9 * pool.gpus)
    draws = [workload.lifetime() for _ in range(20_000)]
    assert sum(draws) / len(draws) == pytest.approx(workload.mean_lifetime, rel=0.05)
    # the stationary residual life of a lognormal: E[T²] / (2 E[T]) = E[T] e^{σ²} / 2
    residuals = [workload.residual() for _ in range(20_000)]
    assert sum(residuals) / len(residuals) == pytest.approx(workload.mean_lifetime * math.exp(0.64) / 2, rel=0.05)


def test_percentiles_come_from_the_increase_of_the_scheduler_histogram() -> None:
    def text(counts: list[int]) -> str:
        les = ["0.001", "0.0025", "0.005", "+Inf"]
        return "\n".join(f'hami_scheduler_request_duration_seconds_bucket{{le="{le}",path="/filter"}} {c}'
                         for le, c in zip(les, counts))

    before, now = histogram(text([10, 10, 10, 10]), "/filter"), histogram(text([10, 60, 110, 110]), "/filter")
    # 100 new requests: 50 in (1, 2.5] ms, 50 in (2.5, 5] ms
    assert histogram_quantile(now, before, 0.5) == pytest.approx(0.0025)
    assert histogram_quantile(now, before, 0.25) == pytest.approx(0.00175)
    assert histogram_quantile(now, before, 0.99) == pytest.approx(0.0025 + 0.0025 * 49 / 50)
    assert math.isnan(histogram_quantile(before, before, 0.5))  # nothing new


def test_memory_growth_is_the_steady_slope_per_hour() -> None:
    rows = [{"minute": m, "phase": "warmup" if m < 10 else "steady", "sched_rss_mib": 100.0 + (50 if m < 10 else
                                                                                                m * 0.1)}
            for m in range(0, 40)]
    # 0.1 MiB per minute over a mean of 102.45 MiB in the steady rows
    assert growth_per_hour(rows) == pytest.approx(6 / (100 + 0.1 * 24.5) * 100)
