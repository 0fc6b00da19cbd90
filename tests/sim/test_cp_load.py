"""Load: 50 concurrent official clients, each patching its own object while watching it, plus a few watching
everything; no lost events, no stuck watches. Runs HAMI_LOAD_SECONDS (default 5; the issue's full run is
HAMI_LOAD_SECONDS=30)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from kubernetes import client, config, watch

from hami.sim.apiserver import ApiServer

CLIENTS = 50
GLOBAL_WATCHERS = 5
SECONDS = float(os.environ.get("HAMI_LOAD_SECONDS", "5"))
WATCH_TIMEOUT = 2  # each watch ends after this; clients resume from the last version they saw


class Observer:
    """Re-opens its watch from the last seen version until told to stop; records every value per object."""

    def __init__(self, core: client.CoreV1Api, start_rv: str, field_selector: str | None = None) -> None:
        self.core, self.rv, self.field_selector = core, start_rv, field_selector
        self.seen: dict[str, list[int]] = {}
        self.errors: list[str] = []
        self.longest_stream = 0.0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        kwargs = {"field_selector": self.field_selector} if self.field_selector else {}
        while not self.done.is_set():
            opened = time.monotonic()
            try:
                for event in watch.Watch().stream(self.core.list_namespaced_config_map, "load",
                                                  resource_version=self.rv, timeout_seconds=WATCH_TIMEOUT,
                                                  deserialize=False, **kwargs):
                    obj = event["object"]
                    self.rv = obj["metadata"]["resourceVersion"]
                    if event["type"] == "MODIFIED":
                        self.seen.setdefault(obj["metadata"]["name"], []).append(int(obj["data"]["n"]))
            except Exception as exc:
                self.errors.append(repr(exc))
                return
            self.longest_stream = max(self.longest_stream, time.monotonic() - opened)


def test_concurrent_watch_and_patch(tmp_path: Path) -> None:
    server = ApiServer(history=100_000).start()
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    clients = [config.new_client_from_config(config_file=str(kubeconfig)) for _ in range(CLIENTS + GLOBAL_WATCHERS)]
    cores = [client.CoreV1Api(c) for c in clients]
    try:
        cores[0].create_namespace({"metadata": {"name": "load"}})
        for i in range(CLIENTS):
            cores[0].create_namespaced_config_map("load", {"metadata": {"name": f"cm-{i}"}, "data": {"n": "0"}})
        start_rv = cores[0].list_namespaced_config_map("load").metadata.resource_version
        own = [Observer(cores[i], start_rv, f"metadata.name=cm-{i}") for i in range(CLIENTS)]
        everything = [Observer(cores[CLIENTS + i], start_rv) for i in range(GLOBAL_WATCHERS)]
        for observer in own + everything:
            observer.thread.start()
        counts = [0] * CLIENTS
        stop = threading.Event()
        failures: list[str] = []

        def patcher(i: int) -> None:
            while not stop.is_set():
                try:
                    cores[i].patch_namespaced_config_map(f"cm-{i}", "load", {"data": {"n": str(counts[i] + 1)}})
                except Exception as exc:
                    failures.append(repr(exc))
                    return
                counts[i] += 1

        patchers = [threading.Thread(target=patcher, args=(i,), daemon=True) for i in range(CLIENTS)]
        for thread in patchers:
            thread.start()
        time.sleep(SECONDS)
        stop.set()
        for thread in patchers:
            thread.join(30)
        assert not failures, failures[:3]
        assert all(counts), "every client patched at least once"

        def caught_up() -> bool:
            return all(o.seen.get(f"cm-{i}", [0])[-1] == counts[i] for i, o in enumerate(own)) and all(
                o.seen.get(f"cm-{i}", [0])[-1] == counts[i] for o in everything for i in range(CLIENTS))

        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not caught_up():
            time.sleep(0.05)
        for observer in own + everything:
            observer.done.set()
        for observer in own + everything:
            observer.thread.join(WATCH_TIMEOUT + 5)
            assert not observer.thread.is_alive(), "a watch is stuck"
            assert not observer.errors, observer.errors[:3]
            assert observer.longest_stream < WATCH_TIMEOUT + 3, "a watch outlived its timeoutSeconds"
        for i, observer in enumerate(own):
            assert observer.seen.get(f"cm-{i}") == list(range(1, counts[i] + 1)), f"client {i} lost events"
        for observer in everything:
            for i in range(CLIENTS):
                assert observer.seen.get(f"cm-{i}") == list(range(1, counts[i] + 1)), "a global watch lost events"
    finally:
        for c in clients:
            c.close()
        server.stop()
