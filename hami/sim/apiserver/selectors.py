"""Label and field selectors: parsing (400 on malformed input) and matching, as the real server does.

Label selectors accept `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, `k>n`, `k<n`;
`!=` and `notin` also match objects without the label. Field selectors accept `f=v`, `f==v`,
`f!=v` over the field labels each resource supports (others: "field label not supported"); a
missing field reads as "" (so `spec.nodeName=` selects unscheduled pods).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hami.sim.apiserver import errors

_KEY = re.compile(r"^([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?/)?[a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?$")
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", ">", "<"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        try:
            number = int(value or "")
        except ValueError:
            return False
        return number > int(self.values[0]) if self.op == ">" else number < int(self.values[0])


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _check_key(key: str, whole: str) -> str:
    if not _KEY.match(key) or len(key.rsplit("/", 1)[-1]) > 63:
        raise errors.bad_request(f"unable to parse requirement: invalid label key {key!r} in {whole!r}")
    return key


def _check_value(value: str, whole: str) -> str:
    if len(value) > 63 or not _VALUE.match(value):
        raise errors.bad_request(f"unable to parse requirement: invalid label value {value!r} in {whole!r}")
    return value


_SET = re.compile(r"^\s*(\S+?)\s+(in|notin)\s*\((.*)\)\s*$")
_BINARY = re.compile(r"^\s*([^=!<>\s]+)\s*(==|!=|=|>|<)\s*(.*?)\s*$")


def parse_label_selector(text: str | None) -> tuple[Requirement, ...]:
    """Parse a label selector string; the empty selector matches everything."""
    if not text or not text.strip():
        return ()
    requirements: list[Requirement] = []
    for raw in _split_top_level(text):
        part = raw.strip()
        if not part:
            raise errors.bad_request(f"unable to parse requirement: empty requirement in {text!r}")
        if m := _SET.match(part):
            key, op = _check_key(m.group(1), text), m.group(2)
            values = tuple(_check_value(v.strip(), text) for v in m.group(3).split(","))
            requirements.append(Requirement(key, op, values))
        elif m := _BINARY.match(part):
            key, op, value = _check_key(m.group(1), text), m.group(2), m.group(3)
            if op in (">", "<"):
                if not re.fullmatch(r"-?\d+", value):
                    raise errors.bad_request(f"unable to parse requirement: {value!r} is not an integer")
            else:
                _check_value(value, text)
            requirements.append(Requirement(key, "=" if op == "==" else op, (value,)))
        elif part.startswith("!"):
            requirements.append(Requirement(_check_key(part[1:].strip(), text), "!"))
        else:
            requirements.append(Requirement(_check_key(part, text), "exists"))
    return tuple(requirements)


def labels_match(requirements: tuple[Requirement, ...], obj: dict[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(r.matches(labels) for r in requirements)


@dataclass(frozen=True)
class FieldTerm:
    field: str
    negate: bool
    value: str


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, current, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            current.append(text[i:i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def parse_field_selector(text: str | None, supported: tuple[str, ...]) -> tuple[FieldTerm, ...]:
    """Parse a field selector against the field labels the resource supports."""
    if not text or not text.strip():
        return ()
    terms = []
    for part in _split_unescaped(text, ","):
        m = re.match(r"^([^=!]+)(==|!=|=)(.*)$", part)
        if not m:
            raise errors.bad_request(f"invalid selector: {text!r}; can't understand {part!r}")
        name = m.group(1).strip()
        if name not in supported:
            raise errors.bad_request(f'field label not supported: {name}')
        terms.append(FieldTerm(name, m.group(2) == "!=", _unescape(m.group(3))))
    return tuple(terms)


def field_value(obj: dict[str, Any], path: str) -> str:
    """The string a field selector compares: nested lookup, bools lower-cased, missing as ""."""
    current: Any = obj
    for step in path.split("."):
        if not isinstance(current, dict):
            return ""
        current = current.get(step)
    if current is None:
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    if isinstance(current, dict) and path == "source":
        return str(current.get("component", ""))
    return str(current)


def fields_match(terms: tuple[FieldTerm, ...], obj: dict[str, Any]) -> bool:
    return all((field_value(obj, t.field) == t.value) != t.negate for t in terms)


def predicate(label_text: str | None, field_text: str | None,
              supported: tuple[str, ...]) -> Callable[[dict[str, Any]], bool]:
    """One match function for both selectors (parsed once, errors raised before anything streams)."""
    labels = parse_label_selector(label_text)
    fields = parse_field_selector(field_text, supported)
    if not labels and not fields:
        return lambda obj: True
    return lambda obj: labels_match(labels, obj) and fields_match(fields, obj)


_SELECTOR_OPERATORS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}


def from_label_selector(selector: Any) -> tuple[Requirement, ...]:
    """A `metav1.LabelSelector` object (matchLabels, matchExpressions) as requirements; null or {} match all."""
    if selector is None:
        return ()
    if not isinstance(selector, dict):
        raise errors.bad_request("a label selector must be an object")
    requirements = [Requirement(_check_key(k, str(selector)), "=", (_check_value(v, str(selector)),))
                    for k, v in (selector.get("matchLabels") or {}).items()]
    for expr in selector.get("matchExpressions") or []:
        op = _SELECTOR_OPERATORS.get((expr or {}).get("operator", ""))
        if op is None:
            raise errors.bad_request(f"{(expr or {}).get('operator')!r} is not a valid label selector operator")
        values = tuple(expr.get("values") or ())
        if (op in ("in", "notin")) != bool(values):
            raise errors.bad_request(f"values: {'Required value' if values == () else 'Forbidden'}: for operator "
                                     f"{expr.get('operator')!r}")
        requirements.append(Requirement(_check_key(expr.get("key", ""), str(selector)), op, values))
    return tuple(requirements)
