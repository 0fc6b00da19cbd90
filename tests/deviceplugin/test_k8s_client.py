"""hami.k8s.Kube against the local API server through the official client: plain dicts, typed
errors, conditional merge patches with conflict retry, events, leases."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hami.k8s import Conflict, Kube, KubeError, NotFound
from hami.sim.apiserver import ApiServer


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[tuple[ApiServer, Kube]]:
    api = ApiServer().start()
    client = Kube.connect(api.write_kubeconfig(tmp_path / "kubeconfig"))
    api.store.create("nodes", None, {"metadata": {"name": "n1"}})
    yield api, client
    client.close()
    api.stop()


def test_get_find_list_and_selectors(kube) -> None:
    api, k = kube
    assert k.get("nodes", "n1")["metadata"]["name"] == "n1"
    assert k.find("pods", "nope", "default") is None
    with pytest.raises(NotFound) as missing:
        k.get("pods", "nope", "default")
    assert missing.value.status == 404 and "nope" in str(missing.value)
    for name, node in (("a", "n1"), ("b", "n2")):
        api.store.create("pods", "default", {"metadata": {"name": name, "labels": {"app": name}}, "spec": {
            "nodeName": node, "containers": [{"name": "c", "image": "x"}]}})
    assert [p["metadata"]["name"] for p in k.list("pods", field_selector="spec.nodeName=n1")] == ["a"]
    assert [p["metadata"]["name"] for p in k.list("pods", "default", label_selector="app=b")] == ["b"]
    with pytest.raises(ValueError, match="namespaced"):
        k.get("pods", "a")


def test_merge_patch_and_annotate(kube) -> None:
    _, k = kube
    k.annotate("nodes", "n1", {"a": "1", "b": "2"})
    node = k.annotate("nodes", "n1", {"a": None})
    assert node["metadata"]["annotations"] == {"b": "2"}


def test_modify_retries_a_conflict_with_a_fresh_read(kube) -> None:
    api, k = kube
    seen: list[str | None] = []

    def change(node: dict) -> dict:
        seen.append((node["metadata"].get("annotations") or {}).get("other"))
        if len(seen) == 1:  # someone else writes between our read and our patch
            api.store.patch("nodes", None, "n1", {"metadata": {"annotations": {"other": "x"}}},
                            "application/merge-patch+json")
        return {"metadata": {"annotations": {"mine": "y"}}}

    result = k.modify("nodes", "n1", change)
    assert seen == [None, "x"]  # the second attempt saw the other writer's change
    assert result is not None and result["metadata"]["annotations"] == {"other": "x", "mine": "y"}
    assert k.modify("nodes", "n1", lambda node: None) is None


def test_modify_gives_up_after_the_retries(kube) -> None:
    api, k = kube
    k.retries = 2

    def change(node: dict) -> dict:
        api.store.patch("nodes", None, "n1", {"metadata": {"labels": {"n": node["metadata"]["resourceVersion"]}}},
                        "application/merge-patch+json")
        return {"metadata": {"annotations": {"mine": "y"}}}

    with pytest.raises(Conflict):
        k.modify("nodes", "n1", change)


def test_modify_decides_on_the_callers_copy_and_reads_only_when_it_was_stale(kube) -> None:
    """`current=`: the object the caller just read (a list item). Fresh: one PATCH, no GET.
    Stale: the conflict costs one GET, no backoff and no retry. "Nothing to do" on a copy is
    confirmed on a fresh read, never trusted (the lock it would release may have appeared since)."""
    api, k = kube
    calls: list[str] = []
    remember = api.record
    api.record = lambda method, path, code: (calls.append(f"{method} {code}"), remember(method, path, code))

    def requests(expected: int) -> list[str]:  # the server records a request after it answers
        deadline = time.monotonic() + 5
        while len(calls) < expected and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)  # and nothing more arrives
        return calls

    mark = {"metadata": {"annotations": {"mine": "y"}}}
    copy = api.store.get("nodes", None, "n1")  # in-process reads and writes: not requests
    assert k.modify("nodes", "n1", lambda node: mark, current=copy)["metadata"]["annotations"] == {"mine": "y"}
    assert requests(1) == ["PATCH 200"]

    calls.clear()
    k.retries = 1  # a stale copy must not spend the only attempt
    assert k.modify("nodes", "n1", lambda node: {"metadata": {"annotations": {"mine": "z"}}}, current=copy)
    assert requests(3) == ["PATCH 409", "GET 200", "PATCH 200"]

    api.store.patch("nodes", None, "n1", {"metadata": {"annotations": {"lock": "held"}}},
                    "application/merge-patch+json")
    calls.clear()

    def release(node: dict) -> dict | None:
        held = (node["metadata"].get("annotations") or {}).get("lock")
        return {"metadata": {"annotations": {"lock": None}}} if held else None

    assert k.modify("nodes", "n1", release, current=copy) is not None  # the copy predates the lock
    assert requests(2) == ["GET 200", "PATCH 200"]
    assert "lock" not in k.get("nodes", "n1")["metadata"]["annotations"]


def test_events_and_leases(kube) -> None:
    api, k = kube
    pod = api.store.create("pods", "default", {"metadata": {"name": "p"}, "spec": {
        "containers": [{"name": "c", "image": "x"}]}})
    k.event(pod, "Warning", "Testing", "something happened", "hami-test")
    [event] = api.store.list("events", "default")["items"]
    assert (event["reason"], event["type"], event["involvedObject"]["name"]) == ("Testing", "Warning", "p")
    assert event["source"]["component"] == "hami-test"
    assert k.hold_lease("leader", "kube-system", "a", 30)
    assert not k.hold_lease("leader", "kube-system", "b", 30)
    assert k.hold_lease("leader", "kube-system", "a", 30)  # renewal
    lease = api.store.get("leases", "kube-system", "leader")
    assert lease["spec"]["holderIdentity"] == "a"


def test_an_unreachable_server_is_a_kube_error(tmp_path: Path) -> None:
    api = ApiServer().start()
    k = Kube.connect(api.write_kubeconfig(tmp_path / "kubeconfig"), timeout=2)
    api.stop()
    try:
        with pytest.raises(KubeError) as failed:
            k.get("nodes", "n1")
        assert failed.value.status == 0
    finally:
        k.close()
