"""The three PATCH flavours the real server accepts for built-in types, as pure functions on dicts.

- JSON merge patch (RFC 7386, `application/merge-patch+json`): maps merge, `null` deletes, lists replace.
- JSON patch (RFC 6902, `application/json-patch+json`): add/remove/replace/move/copy/test; a
  malformed document is 400, one that cannot be applied (missing path, failed test) is 422.
- Strategic merge patch (`application/strategic-merge-patch+json`): a merge patch where the
  lists Kubernetes declares with a merge key (containers by name, conditions by type, ...) merge
  element-wise, `finalizers` merges as a set, and the directives `$patch` (replace/delete/merge),
  `$retainKeys`, `$deleteFromPrimitiveList/<f>` and `$setElementOrder/<f>` are honoured. The merge
  keys come from a table of the fields our components touch, not from the OpenAPI schema.

Inputs are never mutated.
"""

from __future__ import annotations

import copy
from typing import Any

from hami.sim.apiserver import errors

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"
PATCH_TYPES = (JSON_PATCH, MERGE, STRATEGIC)

# field name -> merge key, for the core/v1 lists declared `patchStrategy: merge`.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "ports": "containerPort",
    "conditions": "type",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
    "addresses": "type",
    "hostAliases": "ip",
    "resourceClaims": "name",
}
# primitive lists declared `patchStrategy: merge` (merged as ordered sets)
PRIMITIVE_MERGE = frozenset({"finalizers"})


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ----------------------------------------------------------------------------------------------
# JSON patch (RFC 6902)


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise errors.bad_request(f"invalid JSON pointer {path!r}")
    if path == "":
        return []
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _index(container: list[Any], token: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise errors.unprocessable(f"invalid array index {token!r}")
    index = int(token)
    limit = len(container) if allow_end else len(container) - 1
    if index > limit:
        raise errors.unprocessable(f"array index {index} out of bounds")
    return index


def _parent(doc: Any, parts: list[str]) -> Any:
    current = doc
    for token in parts[:-1]:
        if isinstance(current, dict):
            if token not in current:
                raise errors.unprocessable(f"doc is missing path: /{'/'.join(parts)}")
            current = current[token]
        elif isinstance(current, list):
            current = current[_index(current, token, allow_end=False)]
        else:
            raise errors.unprocessable(f"doc is missing path: /{'/'.join(parts)}")
    return current


def _get(doc: Any, parts: list[str]) -> Any:
    if not parts:
        return doc
    parent = _parent(doc, parts)
    token = parts[-1]
    if isinstance(parent, dict):
        if token not in parent:
            raise errors.unprocessable(f"doc is missing key: /{'/'.join(parts)}")
        return parent[token]
    if isinstance(parent, list):
        return parent[_index(parent, token, allow_end=False)]
    raise errors.unprocessable(f"doc is missing path: /{'/'.join(parts)}")


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _parent(doc, parts)
    token = parts[-1]
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, token, allow_end=True), value)
    else:
        raise errors.unprocessable(f"cannot add at /{'/'.join(parts)}")
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    if not parts:
        raise errors.unprocessable("cannot remove the whole document")
    parent = _parent(doc, parts)
    token = parts[-1]
    if isinstance(parent, dict):
        if token not in parent:
            raise errors.unprocessable(f"unable to remove nonexistent key: /{'/'.join(parts)}")
        del parent[token]
    elif isinstance(parent, list):
        del parent[_index(parent, token, allow_end=False)]
    else:
        raise errors.unprocessable(f"cannot remove /{'/'.join(parts)}")
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902, applied atomically to a copy."""
    if not isinstance(operations, list):
        raise errors.bad_request("json patch must be a JSON array of operations")
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op:
            raise errors.bad_request(f"invalid JSON patch operation {op!r}")
        kind = op["op"]
        parts = _pointer(op.get("path"))
        if kind in ("add", "replace", "test") and "value" not in op:
            raise errors.bad_request(f"JSON patch operation {kind!r} needs a value")
        if kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op["value"]))
        elif kind == "remove":
            doc = _remove(doc, parts)
        elif kind == "replace":
            _get(doc, parts)
            doc = _add(_remove(doc, parts), parts, copy.deepcopy(op["value"])) if parts else copy.deepcopy(op["value"])
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from"))
            value = copy.deepcopy(_get(doc, source))
            if kind == "move":
                doc = _remove(doc, source)
            doc = _add(doc, parts, value)
        elif kind == "test":
            if _get(doc, parts) != op["value"]:
                raise errors.unprocessable(f"testing value /{'/'.join(parts)} failed")
        else:
            raise errors.bad_request(f"unexpected JSON patch operation {kind!r}")
    return doc


# ----------------------------------------------------------------------------------------------
# Strategic merge patch


_DELETED = object()


def _strip(value: Any) -> Any:
    """A patch value as stored: directives removed."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip(v) for v in value if not (isinstance(v, dict) and v.get("$patch") == "replace"
                                                  and len(v) == 1)]
    return copy.deepcopy(value)


def _merge_list(original: list[Any], patch: list[Any], key: str) -> list[Any]:
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return _strip(patch)
    result = [copy.deepcopy(item) for item in original]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            result.append(_strip(item))
            continue
        position = next((i for i, cur in enumerate(result) if isinstance(cur, dict) and cur.get(key) == item[key]),
                        None)
        if item.get("$patch") == "delete":
            if position is not None:
                del result[position]
            continue
        if position is None:
            result.append(_strip(item))
        else:
            result[position] = strategic_merge(result[position], item)
    return result


def strategic_merge(original: Any, patch: Any) -> Any:
    """Kubernetes strategic merge for the fields in MERGE_KEYS / PRIMITIVE_MERGE (module doc)."""
    if not isinstance(patch, dict):
        return _strip(patch)
    directive = patch.get("$patch")
    if directive == "delete":
        return _DELETED
    if directive == "replace":
        return _strip(patch)
    if directive not in (None, "merge"):
        raise errors.bad_request(f"unknown patch directive {directive!r}")
    result = dict(original) if isinstance(original, dict) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            if isinstance(result.get(name), list):
                result[name] = [x for x in result[name] if x not in (value or [])]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = strategic_merge(result.get(key), value)
            if merged is _DELETED:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list) and key in MERGE_KEYS:
            current = result.get(key)
            result[key] = _merge_list(current if isinstance(current, list) else [], value, MERGE_KEYS[key])
        elif isinstance(value, list) and key in PRIMITIVE_MERGE:
            current = list(result.get(key) or [])
            result[key] = current + [v for v in value if v not in current]
        else:
            result[key] = _strip(value)
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def apply(content_type: str, target: dict[str, Any], body: Any) -> dict[str, Any]:
    """Apply a PATCH body of `content_type` to `target` (a copy comes back)."""
    base = content_type.split(";", 1)[0].strip().lower()
    if base == JSON_PATCH:
        result = json_patch(target, body)
    elif base == MERGE:
        if not isinstance(body, dict):
            raise errors.bad_request("merge patch must be a JSON object")
        result = merge_patch(target, body)
    elif base == STRATEGIC:
        if not isinstance(body, dict):
            raise errors.bad_request("strategic merge patch must be a JSON object")
        result = strategic_merge(target, body)
        if result is _DELETED:
            raise errors.unprocessable("a strategic merge patch cannot delete the whole object")
    else:
        raise errors.unsupported_media_type(content_type)
    if not isinstance(result, dict):
        raise errors.unprocessable("the patched object is not a JSON object")
    return result
