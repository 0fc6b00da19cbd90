"""Where `make kube` (hack/kube/build.sh) put etcd, kube-apiserver and kube-scheduler.

The same rule as the build script: `${HAMI_KUBE_CACHE:-${XDG_CACHE_HOME:-~/.cache}/hami/kube}/<version>/bin`,
the version read from hack/kube/VERSION of the checkout this package runs from (or HAMI_KUBE_VERSION).
HAMI_KUBE_BIN names a folder with the three binaries directly and skips both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

NAMES = ("etcd", "kube-apiserver", "kube-scheduler")
_CHECKOUT = Path(__file__).resolve().parents[3]


class BinariesMissing(RuntimeError):
    """The binaries are not built; the message says how to build them and where the last build logged."""


@dataclass(frozen=True)
class Binaries:
    version: str
    folder: Path

    @property
    def etcd(self) -> Path:
        return self.folder / "etcd"

    @property
    def kube_apiserver(self) -> Path:
        return self.folder / "kube-apiserver"

    @property
    def kube_scheduler(self) -> Path:
        return self.folder / "kube-scheduler"


def cache_root() -> Path:
    if os.environ.get("HAMI_KUBE_CACHE"):
        return Path(os.environ["HAMI_KUBE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hami" / "kube"


def pinned_version() -> str:
    if os.environ.get("HAMI_KUBE_VERSION"):
        return os.environ["HAMI_KUBE_VERSION"]
    pin = _CHECKOUT / "hack" / "kube" / "VERSION"
    try:
        return pin.read_text().strip()
    except OSError as exc:
        raise BinariesMissing(f"cannot tell which Kubernetes release to use: {pin} unreadable ({exc}); "
                              "set HAMI_KUBE_BIN to a folder holding etcd, kube-apiserver and kube-scheduler") from exc


def find_binaries() -> Binaries:
    """The built binaries, or BinariesMissing saying what to run and which log explains a failed build."""
    if os.environ.get("HAMI_KUBE_BIN"):
        found = Binaries(os.environ.get("HAMI_KUBE_VERSION", "unknown"), Path(os.environ["HAMI_KUBE_BIN"]))
        log = None
    else:
        version = pinned_version()
        found = Binaries(version, cache_root() / version / "bin")
        log = cache_root() / version / "build.log"
    missing = [n for n in NAMES if not os.access(found.folder / n, os.X_OK)]
    if missing:
        hint = (f"the last build logged to {log}" if log and log.exists()
                else "no build has been attempted" if log else "HAMI_KUBE_BIN is set")
        raise BinariesMissing(f"real Kubernetes {found.version} binaries missing in {found.folder} "
                              f"({', '.join(missing)}): run `make kube`; {hint}")
    return found
