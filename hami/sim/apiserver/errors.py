"""API errors as Kubernetes `Status` objects: one exception type carrying code, reason and details.

The reasons and messages follow the real API server's wording (k8s.io/apimachinery
`api/errors`), because clients and tests match on them: `NotFound` 404, `AlreadyExists` 409,
`Conflict` 409, `Invalid` 422, `BadRequest` 400, `Expired`/`Gone` 410, `MethodNotAllowed` 405,
`RequestEntityTooLarge` 413, `UnsupportedMediaType` 415, `Timeout` 504.
"""

from __future__ import annotations

from typing import Any


class StatusError(Exception):
    """A failed API call; `status()` is the body the server returns."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _qualified(group: str, plural: str) -> str:
    return f"{plural}.{group}" if group else plural


def _details(name: str, group: str, plural: str, causes: list[dict[str, str]] | None = None) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "kind": plural}
    if group:
        details["group"] = group
    if causes:
        details["causes"] = causes
    return details


def not_found(group: str, plural: str, name: str) -> StatusError:
    return StatusError(404, "NotFound", f'{_qualified(group, plural)} "{name}" not found',
                       _details(name, group, plural))


def already_exists(group: str, plural: str, name: str) -> StatusError:
    return StatusError(409, "AlreadyExists", f'{_qualified(group, plural)} "{name}" already exists',
                       _details(name, group, plural))


def conflict(group: str, plural: str, name: str, why: str) -> StatusError:
    """409 Conflict, e.g. a stale resourceVersion (the optimistic-concurrency failure)."""
    return StatusError(409, "Conflict", f'Operation cannot be fulfilled on {_qualified(group, plural)} "{name}": {why}',
                       _details(name, group, plural))


STALE = "the object has been modified; please apply your changes to the latest version and try again"


def invalid(kind: str, name: str, causes: list[tuple[str, str]]) -> StatusError:
    """422 Invalid: `causes` are (field path, message) pairs, as field.ErrorList renders them."""
    text = "; ".join(f"{field}: {msg}" for field, msg in causes)
    detail_causes = [{"reason": "FieldValueInvalid", "message": msg, "field": field} for field, msg in causes]
    return StatusError(422, "Invalid", f'{kind} "{name}" is invalid: {text}',
                       {"name": name, "kind": kind, "causes": detail_causes})


def unprocessable(message: str) -> StatusError:
    """422 without a kind (a JSON patch that cannot be applied)."""
    return StatusError(422, "Invalid", message)


def bad_request(message: str) -> StatusError:
    return StatusError(400, "BadRequest", message)


def cannot_handle(kind: str, api_version: str, why: str) -> StatusError:
    """400 for a body the decoder refuses (wrong JSON type, malformed quantity, unknown field when strict)."""
    version = api_version.rsplit("/", 1)[-1]
    return StatusError(400, "BadRequest", f'{kind} in version "{version}" cannot be handled as a {kind}: {why}')


def too_large(limit: int) -> StatusError:
    return StatusError(413, "RequestEntityTooLarge", f"Request entity too large: limit is {limit}")


def gone(message: str) -> StatusError:
    """410: what a watch from a compacted resourceVersion receives (as an ERROR event)."""
    return StatusError(410, "Expired", message)


def method_not_allowed(message: str = "the server does not allow this method on the requested resource") -> StatusError:
    return StatusError(405, "MethodNotAllowed", message)


PATCH_MEDIA_TYPES = ("application/json-patch+json", "application/merge-patch+json",
                     "application/strategic-merge-patch+json")
BODY_MEDIA_TYPES = ("application/json", "application/yaml")


def unsupported_media_type(content_type: str, accepted: tuple[str, ...] = PATCH_MEDIA_TYPES) -> StatusError:
    return StatusError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                       f"accepted media types include: {', '.join(accepted)} (got {content_type!r})")


def path_not_found(path: str) -> StatusError:
    del path  # the real server does not echo it
    return StatusError(404, "NotFound", "the server could not find the requested resource")
