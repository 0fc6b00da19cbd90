"""The two errors of the wire contract.

`AnnotationError`: a value written by a machine (ours or HAMi's) does not decode; the message names
the annotation, the offending part and what was expected, so a log line is enough to find it.
`RequestError`: what a user wrote in a Pod cannot be scheduled; the message names the container,
the resource, the allowed range and what to write instead (the webhook shows it as the denial).
Both are `ValueError`s so callers that only care about "bad input" can catch one type.
"""

from __future__ import annotations


class AnnotationError(ValueError):
    """A malformed annotation value.

    `annotation` is the annotation key, `part` locates the offending piece inside the value
    (e.g. "container 1 device 0 'GPU-x,NVIDIA,abc,0'"), `problem` says what is wrong and what
    is expected.
    """

    def __init__(self, annotation: str, part: str, problem: str) -> None:
        self.annotation = annotation
        self.part = part
        self.problem = problem
        where = f"{annotation}: {part}" if part else annotation
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):  # keep pickling (multiprocessing, xdist) working with keyword state
        return (type(self), (self.annotation, self.part, self.problem))


class RequestError(ValueError):
    """A Pod asks for something that cannot be scheduled as written.

    `container` is the container's name (None for a pod-level annotation), `resource` the
    resource or annotation name, `allowed` the accepted range or values, `value` what was
    written. The message ends with what to do.
    """

    def __init__(
        self,
        *,
        container: str | None,
        resource: str,
        allowed: str,
        value: object = None,
        problem: str = "is not valid",
        hint: str = "",
    ) -> None:
        self.container = container
        self.resource = resource
        self.allowed = allowed
        self.value = value
        where = f"container {container!r}" if container is not None else "pod"
        shown = f" {value!r}" if value is not None else ""
        message = f"{where}: {resource}{shown} {problem}; allowed: {allowed}"
        if hint:
            message += f"; {hint}"
        self.problem = problem
        self.hint = hint
        super().__init__(message)

    def __reduce__(self):
        return (
            _rebuild_request_error,
            (self.container, self.resource, self.allowed, self.value, self.problem, self.hint),
        )


def _rebuild_request_error(container, resource, allowed, value, problem, hint) -> RequestError:
    return RequestError(
        container=container, resource=resource, allowed=allowed, value=value, problem=problem, hint=hint
    )


__all__ = ["AnnotationError", "RequestError"]
