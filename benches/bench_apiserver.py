"""The simulated API server's latency on one kept-alive connection (target: >= 1,000 small requests/s).

Each round is one request and its whole response on a reused `http.client` connection: a GET of
one ConfigMap and a merge PATCH of it (the shape of our components' node-lock and annotation
writes). The requests/s figure is `1 / median` and goes into `extra_info["requests_per_s"]`;
the target is reported, not asserted (see benches/README.md).
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import pytest

from hami.sim.apiserver import ApiServer

TARGET_REQUESTS_PER_S = 1000
PATH = "/api/v1/namespaces/default/configmaps/bench"


@pytest.fixture(scope="module")
def connection() -> Iterator[http.client.HTTPConnection]:
    with ApiServer() as server:
        server.store.create("configmaps", "default", {"metadata": {"name": "bench"}, "data": {"n": "0"}})
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        yield conn
        conn.close()


def _round_trip(conn: http.client.HTTPConnection, method: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> None:
    conn.request(method, PATH, body=body, headers=headers or {})
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200


@pytest.mark.parametrize("verb", ["get", "patch"])
def test_kept_alive_requests_per_second(benchmark, connection: http.client.HTTPConnection, verb: str) -> None:
    counter = iter(range(10**9))

    def get() -> None:
        _round_trip(connection, "GET")

    def patch() -> None:
        body = json.dumps({"data": {"n": str(next(counter))}}).encode()
        _round_trip(connection, "PATCH", body, {"Content-Type": "application/merge-patch+json"})

    benchmark.pedantic(get if verb == "get" else patch, rounds=2000, warmup_rounds=50)
    rate = 1 / benchmark.stats.stats.median
    benchmark.extra_info.update({"requests_per_s": round(rate), "target_requests_per_s": TARGET_REQUESTS_PER_S,
                                 "target_met": rate >= TARGET_REQUESTS_PER_S})
    print(f"\napiserver kept-alive {verb}: {rate:,.0f} requests/s (target >= {TARGET_REQUESTS_PER_S:,}: "
          f"{'met' if rate >= TARGET_REQUESTS_PER_S else 'MISSED'})")
