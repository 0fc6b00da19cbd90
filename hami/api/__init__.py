"""hami.api: the wire contract; pure functions, no I/O; may import stdlib and hami.devices only.

Resource and annotation names (`names`), the codec of every annotation the scheduler and the
node agent exchange (HAMi's, current and legacy forms, and ours: `hami.io/node-mig-instances`),
and the parsing of a Pod into the engine's `Request`. Decoders raise `AnnotationError`, the Pod
parser `RequestError`; both are ValueErrors whose message says what is wrong and what is expected.
"""

from __future__ import annotations

from hami.api import codecs, names
from hami.api.codecs import *  # noqa: F403  (codecs.__all__ is the codec facade; not repeated here)
from hami.api.errors import AnnotationError, RequestError
from hami.api.pods import RequestDefaults, container_names, parse_pod, parse_quantity
from hami.api.requests import ContainerRequest, GpuPolicy, Mode, NodePolicy, Request

__all__ = [
    *codecs.__all__,
    "AnnotationError",
    "ContainerRequest",
    "GpuPolicy",
    "Mode",
    "NodePolicy",
    "Request",
    "RequestDefaults",
    "RequestError",
    "container_names",
    "names",
    "parse_pod",
    "parse_quantity",
]
