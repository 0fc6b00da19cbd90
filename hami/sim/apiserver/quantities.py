"""Kubernetes resource quantities (`resource.Quantity`): parsing and the canonical string form.

The real API server decodes every quantity (resources, limits, capacity, allocatable, ...) and
writes it back in canonical form, so `1` becomes `"1"`, `20000` becomes `"20k"`, `0.5` becomes
`"500m"` and `1.5Gi` becomes `"1536Mi"`; clients (the official Python client among them) type
these fields as strings. Rules, as apimachinery's `resource` package applies them:

- a number (sign, digits, optional fraction) and a suffix: decimal SI (`n u m k M G T P E`),
  binary SI (`Ki Mi Gi Ti Pi Ei`) or a decimal exponent (`e3`, `E-2`);
- precision is nano: anything finer is rounded up, away from zero;
- the canonical form keeps the suffix family (binary, decimal SI, exponent), takes the largest
  exponent (a multiple of 3, or of 10 bits) that leaves an integer mantissa, and prints binary
  values that are below 1024 in magnitude or not whole as decimal SI.

Values are held exactly as an integer count of nano units (Python ints do not overflow).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

FORMAT_WRONG = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
BAD_SUFFIX = "unable to parse quantity's suffix"

DECIMAL_SI, BINARY_SI, DECIMAL_EXPONENT = "DecimalSI", "BinarySI", "DecimalExponent"

_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL_BY_EXPONENT = {v: k for k, v in _DECIMAL.items()}
_BINARY_BY_EXPONENT = {v // 10: k for k, v in _BINARY.items()}
_NUMBER = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?")
_SUFFIX_CHARS = set("eEinumkKMGTP")
NANO = 10**9


class QuantityError(ValueError):
    """A string that is not a quantity; the message is the real server's wording."""


@dataclass(frozen=True)
class Quantity:
    """An exact quantity: `nanos` × 10⁻⁹, printed in its suffix family `fmt`."""

    nanos: int
    fmt: str = DECIMAL_SI

    def __str__(self) -> str:
        return canonical_string(self)

    @property
    def is_integer(self) -> bool:
        return self.nanos % NANO == 0

    def value(self) -> int:
        """The value rounded up to a whole number (Go's `Quantity.Value()`)."""
        return -((-self.nanos) // NANO)


def _split_suffix(text: str, start: int) -> str:
    """The suffix as Go's scanner delimits it: suffix letters, an optional sign, then digits only."""
    pos = start
    while pos < len(text) and text[pos] in _SUFFIX_CHARS:
        pos += 1
    if pos < len(text) and text[pos] in "+-":
        pos += 1
    while pos < len(text) and text[pos].isdigit():
        pos += 1
    if pos != len(text):
        raise QuantityError(FORMAT_WRONG)
    return text[start:]


def parse(value: object) -> Quantity:
    """A quantity from its JSON form (a string, or a bare number as kubectl and YAML send it)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise QuantityError(FORMAT_WRONG)
    if isinstance(value, int):
        return Quantity(value * NANO, DECIMAL_SI)
    text = repr(value) if isinstance(value, float) else value
    if not text:
        raise QuantityError(FORMAT_WRONG)
    match = _NUMBER.match(text)
    if match is None or not (match.group(2) or match.group(3)):
        raise QuantityError(FORMAT_WRONG)
    sign, whole, fraction = match.group(1), match.group(2), match.group(3) or ""
    suffix = _split_suffix(text, match.end())
    if suffix in _DECIMAL:
        multiplier, fmt = Fraction(10) ** _DECIMAL[suffix], DECIMAL_SI
    elif suffix in _BINARY:
        multiplier, fmt = Fraction(2) ** _BINARY[suffix], BINARY_SI
    elif len(suffix) > 1 and suffix[0] in "eE" and re.fullmatch(r"[+-]?[0-9]+", suffix[1:]):
        multiplier, fmt = Fraction(10) ** int(suffix[1:]), DECIMAL_EXPONENT
    else:
        raise QuantityError(BAD_SUFFIX)
    magnitude = (int(whole or "0") + Fraction(int(fraction or "0"), 10 ** len(fraction))) * multiplier * NANO
    nanos = -(-magnitude.numerator // magnitude.denominator)  # round up (away from zero: sign applied after)
    return Quantity(-nanos if sign == "-" else nanos, fmt)


def _trunc_mod(a: int, b: int) -> int:
    """Go's `%` (the remainder takes the sign of the dividend)."""
    return a - b * int(a / b) if a >= 0 else -((-a) % b)


def canonical_string(q: Quantity) -> str:
    if q.nanos == 0:
        return "0"
    fmt = q.fmt
    if fmt == BINARY_SI and (abs(q.nanos) < 1024 * NANO or not q.is_integer):
        fmt = DECIMAL_SI
    if fmt == BINARY_SI:
        amount, exponent = q.nanos // NANO, 0
        while amount % 1024 == 0 and exponent < max(_BINARY_BY_EXPONENT):
            amount //= 1024
            exponent += 1
        return f"{amount}{_BINARY_BY_EXPONENT.get(exponent, '')}"
    amount, exponent = q.nanos, -9
    while amount % 10 == 0:
        amount //= 10
        exponent += 1
    while _trunc_mod(exponent, 3) != 0:
        amount *= 10
        exponent -= 1
    if exponent == 0:
        return str(amount)
    if fmt == DECIMAL_SI and exponent in _DECIMAL_BY_EXPONENT:
        return f"{amount}{_DECIMAL_BY_EXPONENT[exponent]}"
    return f"{amount}e{exponent}"


def canonical(value: object) -> str:
    """The canonical string of a quantity given in any accepted JSON form (QuantityError if malformed)."""
    return canonical_string(parse(value))
