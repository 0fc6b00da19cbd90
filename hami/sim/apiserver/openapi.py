"""OpenAPI v3 (and v2) documents for the served resources, built at run time from `schema`.

kubectl needs them: by default `kubectl apply` validates, and it skips its own client-side
validation only when the server's OpenAPI v3 shows a PATCH operation for the object's
group/version/kind (`x-kubernetes-group-version-kind`) taking the `fieldValidation` query
parameter; it then sends `fieldValidation=Strict` and lets the server check. `kubectl apply`
reads the `x-kubernetes-patch-*` extensions to build its strategic merge patches, and
`kubectl explain` renders the schemas. Nothing here is vendored or fetched: the schemas come
from the installed official client's models (`schema`), the extensions from its tables.

- `/openapi/v3` is the index: one `serverRelativeURL` (with a content hash) per group version;
- `/openapi/v3/api/v1`, `/openapi/v3/apis/<group>/<version>`: paths and component schemas;
- `/openapi/v2`: one Swagger 2.0 JSON document (kubectl itself asks v2 only as protobuf, which
  is not served; other clients read the JSON).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from typing import Any

from hami.sim.apiserver import resources, schema
from hami.sim.apiserver.resources import Resource

META = "io.k8s.apimachinery.pkg.apis.meta.v1"
_META_KINDS = {"ObjectMeta", "ListMeta", "OwnerReference", "ManagedFieldsEntry", "LabelSelector",
               "LabelSelectorRequirement", "Status", "StatusDetails", "StatusCause", "DeleteOptions", "Preconditions",
               "WatchEvent", "Condition", "FieldSelectorRequirement"}
_SPECIAL = {
    "quantity": ("io.k8s.apimachinery.pkg.api.resource.Quantity", {
        "description": "Quantity is a fixed-point representation of a number: a decimal or binary-SI suffixed "
                       "string (\"500m\", \"1.5Gi\", \"20k\") or a bare number; the server stores its canonical "
                       "string form.",
        "oneOf": [{"type": "string"}, {"type": "number"}]}),
    "time": (f"{META}.Time", {"description": "Time is an RFC 3339 date and time, stored in UTC to the second.",
                              "type": "string", "format": "date-time"}),
    "microtime": (f"{META}.MicroTime", {"description": "MicroTime is an RFC 3339 date and time with microseconds.",
                                        "type": "string", "format": "date-time"}),
    "int-or-string": ("io.k8s.apimachinery.pkg.util.intstr.IntOrString", {
        "description": "IntOrString holds an int32 or a string.", "format": "int-or-string",
        "oneOf": [{"type": "integer"}, {"type": "string"}]}),
    "any": ("io.k8s.apimachinery.pkg.runtime.RawExtension", {
        "description": "RawExtension holds any JSON object.", "type": "object"}),
}
_GROUP_PACKAGE = {"": "core"}
_VERSION_PATHS = {"v1": "api/v1"}


def gv_path(api_version: str) -> str:
    """The OpenAPI v3 path of a group version: "api/v1", "apis/coordination.k8s.io/v1"."""
    return _VERSION_PATHS.get(api_version, f"apis/{api_version}")


def _served() -> dict[str, list[Resource]]:
    out: dict[str, list[Resource]] = {}
    for res in resources.RESOURCES:
        out.setdefault(gv_path(res.api_version), []).append(res)
    return out


class _Builder:
    """Component schemas for one set of root models, named as the real server names them."""

    def __init__(self, roots: list[Resource]) -> None:
        self.schemas: dict[str, Any] = {}
        self.names: dict[str, str] = {}
        self.gvk: dict[str, dict[str, str]] = {}
        models: list[str] = []
        for res in roots:
            self.gvk[res.model] = {"group": res.group, "version": res.version, "kind": res.kind}
            models.append(res.model)
            list_model = res.model.replace(res.kind, res.kind + "List", 1) if res.plural != "bindings" else ""
            if list_model and hasattr(schema.models, list_model):
                self.gvk[list_model] = {"group": res.group, "version": res.version, "kind": res.kind + "List"}
                models.append(list_model)
        models += ["V1DeleteOptions", "V1Status"]
        group_of = {res.model: res.group for res in roots}
        for cls in schema.reachable(models):
            kind, version = schema.short_name(cls), schema.version_of(cls)
            if kind in _META_KINDS:
                self.names[cls] = f"{META}.{kind}"
            else:
                group = group_of.get(cls, roots[0].group)
                package = _GROUP_PACKAGE.get(group, group.split(".")[0])
                self.names[cls] = f"io.k8s.api.{package}.{version}.{kind}"
        for cls in self.names:
            self.schemas[self.names[cls]] = self._model(cls)

    def ref(self, name: str) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{name}"}

    def _type(self, tp: schema.Type, description: str = "") -> dict[str, Any]:
        if tp.kind in _SPECIAL:
            name, body = _SPECIAL[tp.kind]
            self.schemas.setdefault(name, body)
            return self._wrap(self.ref(name), description)
        if tp.kind == "model":
            return self._wrap(self.ref(self.names[tp.model]), description, default={})
        if tp.kind == "list":
            out = {"type": "array", "items": self._type(tp.item)}  # type: ignore[arg-type]
        elif tp.kind == "map":
            out = {"type": "object", "additionalProperties": self._type(tp.item)}  # type: ignore[arg-type]
        else:
            out = {"string": {"type": "string"}, "integer": {"type": "integer", "format": "int64"},
                   "number": {"type": "number", "format": "double"}, "boolean": {"type": "boolean"},
                   "bytes": {"type": "string", "format": "byte"}}[tp.kind]
            out = dict(out)
        if description:
            out["description"] = description
        return out

    @staticmethod
    def _wrap(ref: dict[str, Any], description: str, default: Any = None) -> dict[str, Any]:
        if not description:
            return ref
        out: dict[str, Any] = {"allOf": [ref], "description": description}
        if default is not None:
            out["default"] = default
        return out

    def _model(self, cls: str) -> dict[str, Any]:
        shape = schema.model(cls)
        properties: dict[str, Any] = {}
        required: list[str] = []
        for name, spec in shape.fields.items():
            prop = self._type(spec.type, spec.description)
            strategy = schema.PATCH_STRATEGIES.get((cls, spec.attr))
            if strategy and spec.type.kind == "list":
                patch, key, map_keys = strategy
                prop["x-kubernetes-patch-strategy"] = patch
                if key:
                    prop["x-kubernetes-patch-merge-key"] = key
                if map_keys:
                    prop["x-kubernetes-list-type"] = "map"
                    prop["x-kubernetes-list-map-keys"] = list(map_keys)
                elif not key:
                    prop["x-kubernetes-list-type"] = "set"
            properties[name] = prop
            if spec.required:
                required.append(name)
        out: dict[str, Any] = {"description": shape.description, "type": "object", "properties": properties}
        if required:
            out["required"] = required
        if cls in self.gvk:
            out["x-kubernetes-group-version-kind"] = [self.gvk[cls]]
        return out


_WRITE_PARAMS = [
    {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": True},
     "description": "When present, indicates that modifications should not be persisted. Valid value: All."},
    {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": True},
     "description": "A name associated with the actor making these changes."},
    {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True},
     "description": "How the server treats unknown fields in the body: Ignore, Warn (the default) or Strict."},
]
_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
                "application/strategic-merge-patch+json")


def _operation(action: str, res: Resource, body_ref: str | None, response_ref: str, kind: str,
               params: list[dict[str, Any]] | None = None, patch: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": f"{action}{res.kind}", "tags": [res.group or "core"],
        "x-kubernetes-action": action, "x-kubernetes-group-version-kind": {
            "group": res.group, "version": res.version, "kind": kind},
        "parameters": copy.deepcopy(params or []),
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {
            "$ref": f"#/components/schemas/{response_ref}"}}}}},
    }
    if body_ref:
        types = _PATCH_TYPES if patch else ("*/*",)
        schema_ = {"type": "object"} if patch else {"$ref": f"#/components/schemas/{body_ref}"}
        op["requestBody"] = {"required": True, "content": {t: {"schema": schema_} for t in types}}
    return op


def _paths(builder: _Builder, served: list[Resource]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    status_ref = f"{META}.Status"
    for res in served:
        if res.plural == "bindings":
            base = f"/{gv_path(res.api_version)}/namespaces/{{namespace}}/bindings"
            paths[base] = {"post": _operation("post", res, builder.names[res.model], builder.names[res.model],
                                              res.kind, _WRITE_PARAMS)}
            continue
        prefix = f"/{gv_path(res.api_version)}" + ("/namespaces/{namespace}" if res.namespaced else "")
        item_ref = builder.names[res.model]
        list_ref = builder.names.get(res.model.replace(res.kind, res.kind + "List", 1), item_ref)
        paths[f"{prefix}/{res.plural}"] = {
            "get": _operation("list", res, None, list_ref, res.kind),
            "post": _operation("post", res, item_ref, item_ref, res.kind, _WRITE_PARAMS),
            "delete": _operation("deletecollection", res, None, status_ref, res.kind, _WRITE_PARAMS[:1]),
        }
        paths[f"{prefix}/{res.plural}/{{name}}"] = {
            "get": _operation("get", res, None, item_ref, res.kind),
            "put": _operation("put", res, item_ref, item_ref, res.kind, _WRITE_PARAMS),
            "patch": _operation("patch", res, item_ref, item_ref, res.kind, _WRITE_PARAMS, patch=True),
            "delete": _operation("delete", res, None, item_ref, res.kind, _WRITE_PARAMS[:1]),
        }
        for sub in res.subresources:
            if sub == "binding":
                binding = builder.names.get("V1Binding", item_ref)
                paths[f"{prefix}/{res.plural}/{{name}}/binding"] = {
                    "post": _operation("post", res, binding, binding, "Binding", _WRITE_PARAMS)}
            else:
                paths[f"{prefix}/{res.plural}/{{name}}/{sub}"] = {
                    "get": _operation("get", res, None, item_ref, res.kind),
                    "put": _operation("put", res, item_ref, item_ref, res.kind, _WRITE_PARAMS),
                    "patch": _operation("patch", res, item_ref, item_ref, res.kind, _WRITE_PARAMS, patch=True),
                }
        if res.namespaced:
            paths[f"/{gv_path(res.api_version)}/{res.plural}"] = {
                "get": _operation("list", res, None, list_ref, res.kind)}
    return paths


def _info() -> dict[str, str]:
    return {"title": "Kubernetes", "version": str(resources.SERVER_VERSION["gitVersion"])}


@functools.cache
def _v3_docs() -> dict[str, bytes]:
    docs = {}
    for path, served in _served().items():
        builder = _Builder(served)
        doc = {"openapi": "3.0.0", "info": _info(), "paths": _paths(builder, served),
               "components": {"schemas": dict(sorted(builder.schemas.items()))}}
        docs[path] = json.dumps(doc, separators=(",", ":")).encode()
    return docs


def v3_hash(path: str) -> str:
    return hashlib.sha512(_v3_docs()[path]).hexdigest().upper()


def v3_bytes(path: str) -> bytes | None:
    """The OpenAPI v3 document of one group version ("api/v1"), or None if it is not served."""
    return _v3_docs().get(path)


def v3_index_bytes() -> bytes:
    paths = {path: {"serverRelativeURL": f"/openapi/v3/{path}?hash={v3_hash(path)}"} for path in _v3_docs()}
    return json.dumps({"paths": paths}, separators=(",", ":")).encode()


def _to_v2(node: Any) -> Any:
    """A v3 schema fragment in Swagger 2.0 terms (refs under #/definitions, no oneOf/allOf wrappers)."""
    if isinstance(node, list):
        return [_to_v2(n) for n in node]
    if not isinstance(node, dict):
        return node
    if "allOf" in node and len(node["allOf"]) == 1:
        out = _to_v2(node["allOf"][0])
        out.update({k: _to_v2(v) for k, v in node.items() if k not in ("allOf", "default")})
        return out
    out = {}
    for key, value in node.items():
        if key == "$ref":
            out[key] = value.replace("#/components/schemas/", "#/definitions/")
        elif key == "oneOf":
            out["type"] = "string"
        else:
            out[key] = _to_v2(value)
    return out


@functools.cache
def v2_bytes() -> bytes:
    definitions: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for path in _v3_docs():
        doc = json.loads(_v3_docs()[path])
        definitions.update(_to_v2(doc["components"]["schemas"]))
        for route, ops in doc["paths"].items():
            converted = {}
            for method, op in ops.items():
                v2op = {k: _to_v2(v) for k, v in op.items() if k not in ("requestBody", "responses", "parameters")}
                v2op["parameters"] = [{"name": p["name"], "in": "query", "type": "string", "uniqueItems": True,
                                       "description": p["description"]} for p in op.get("parameters") or []]
                if "requestBody" in op:
                    content = op["requestBody"]["content"]
                    v2op["consumes"] = list(content)
                    v2op["parameters"].append({"name": "body", "in": "body", "required": True,
                                               "schema": _to_v2(next(iter(content.values()))["schema"])})
                response = op["responses"]["200"]["content"]["application/json"]["schema"]
                v2op["produces"] = ["application/json", "application/yaml"]
                v2op["responses"] = {"200": {"description": "OK", "schema": _to_v2(response)}}
                converted[method] = v2op
            paths[route] = converted
    doc = {"swagger": "2.0", "info": _info(), "paths": paths, "definitions": dict(sorted(definitions.items()))}
    return json.dumps(doc, separators=(",", ":")).encode()
