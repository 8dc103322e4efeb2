"""A Sigma rule's condition, compiled once into a Python predicate.

``compile_rule`` walks the condition tree pySigma builds (after the log source's pipeline
renamed the fields) and returns a closure ``(event, line, lower_line) -> bool``, with the
literal substrings one of which every matching line must contain (the prefilter). Regular
expressions and CIDR networks are compiled here, never per event. Sigma strings match
case-insensitively unless ``|cased``; unfielded values (keywords) are searched in the raw
line.

What cannot be compiled raises :class:`Unsupported` with a stable reason:
``unknown field: <name>``, ``unsupported modifier: <what>``, ``placeholder``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.rule import SigmaRule
from sigma.types import (
    CompareOperators,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SpecialChars,
)
from vigil.flows.security.sigma.pipelines import Getter

from vigil.records import SecurityEvent

Predicate = Callable[[SecurityEvent, str, str], bool]
#: Literals (lower case) one of which a matching line contains; ``None``: no prefilter.
Needs = frozenset[str] | None


class Unsupported(Exception):
    """A rule uses something the compiler cannot evaluate; ``reason`` is stable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _union(needs: list[Needs]) -> Needs:
    """Literals of an OR: one of any branch's, if every branch has some."""
    out: set[str] = set()
    for n in needs:
        if n is None:
            return None
        out |= n
    return frozenset(out)


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if type(v) is str:
        return v
    return str(v)


_RE_FLAGS = {
    SigmaRegularExpressionFlag.IGNORECASE: re.I,
    SigmaRegularExpressionFlag.MULTILINE: re.M,
    SigmaRegularExpressionFlag.DOTALL: re.S,
}


def _string_test(s: SigmaString, keyword: bool) -> tuple[Callable[[str], bool], Needs]:
    """A test of one (already read) string value, and its literals."""
    if s.contains_placeholder():
        msg = "placeholder"
        raise Unsupported(msg)
    cased = isinstance(s, SigmaCasedString)
    parts = list(s.s)
    if keyword:  # a keyword is found anywhere in the line
        if not parts or parts[0] is not SpecialChars.WILDCARD_MULTI:
            parts.insert(0, SpecialChars.WILDCARD_MULTI)
        if parts[-1] is not SpecialChars.WILDCARD_MULTI:
            parts.append(SpecialChars.WILDCARD_MULTI)
    lits = [p if cased else p.lower() for p in parts if isinstance(p, str)]
    needs: Needs = frozenset({max(lits, key=len).lower()}) if any(lits) else None
    inner = parts[1:-1]
    star = SpecialChars.WILDCARD_MULTI
    if all(isinstance(p, str) for p in parts):  # exact
        lit = "".join(lits)
        return (lambda v: v == lit), needs
    if len(parts) == 3 and parts[0] is star and parts[2] is star and isinstance(inner[0], str):
        lit = lits[0]
        return (lambda v: lit in v), needs
    if len(parts) == 2 and parts[1] is star and isinstance(parts[0], str):
        lit = lits[0]
        return (lambda v: v.startswith(lit)), needs
    if len(parts) == 2 and parts[0] is star and isinstance(parts[1], str):
        lit = lits[0]
        return (lambda v: v.endswith(lit)), needs
    rx = []
    for p in parts:
        if p is star:
            rx.append(".*")
        elif p is SpecialChars.WILDCARD_SINGLE:
            rx.append(".")
        elif isinstance(p, str):
            rx.append(re.escape(p if cased else p.lower()))
    pat = re.compile("".join(rx), re.S)
    fm = pat.fullmatch
    return (lambda v: fm(v) is not None), needs


def _value_test(value: Any, keyword: bool) -> tuple[Callable[[Any], bool], Needs]:
    """A test of one field value (``None`` when the event lacks the field)."""
    if isinstance(value, SigmaString):
        test, needs = _string_test(value, keyword)
        if isinstance(value, SigmaCasedString):

            def cased(v: Any) -> bool:
                t = _text(v)
                return t is not None and test(t)

            return cased, needs

        def nocase(v: Any) -> bool:
            t = _text(v)
            return t is not None and test(t.lower())

        return nocase, needs
    if isinstance(value, SigmaNumber):
        n = value.number
        ns = str(n)
        return (lambda v: v == n or _text(v) == ns), frozenset({ns})
    if isinstance(value, SigmaBool):
        b = "true" if value.boolean else "false"
        return (lambda v: v is value.boolean or (_text(v) or "").lower() == b), None
    if isinstance(value, SigmaNull):
        return (lambda v: v is None or v == ""), None
    if isinstance(value, SigmaExists):
        want = bool(value.exists)
        return (lambda v: (v is not None and v != "") is want), None
    if isinstance(value, SigmaRegularExpression):
        flags = 0
        for f in value.flags:
            flags |= _RE_FLAGS.get(f, 0)
        try:
            pat = re.compile(value.regexp.to_plain() if isinstance(value.regexp, SigmaString)
                             else str(value.regexp), flags)  # fmt: skip
        except re.error as ex:
            msg = "bad regular expression"
            raise Unsupported(msg) from ex
        search = pat.search

        def rx(v: Any) -> bool:
            t = _text(v)
            return t is not None and search(t) is not None

        return rx, None
    if isinstance(value, SigmaCIDRExpression):
        net = value.network

        def cidr(v: Any) -> bool:
            if v is None:
                return False
            try:
                return ipaddress.ip_address(v) in net
            except ValueError:
                return False

        return cidr, None
    if isinstance(value, SigmaCompareExpression):
        num = value.number.number
        op = value.op
        cmp: Callable[[float], bool] = {
            CompareOperators.LT: lambda x: x < num,
            CompareOperators.LTE: lambda x: x <= num,
            CompareOperators.GT: lambda x: x > num,
            CompareOperators.GTE: lambda x: x >= num,
        }.get(op, lambda x: False)

        def compare(v: Any) -> bool:
            if v is None:
                return False
            try:
                return cmp(float(v))
            except (TypeError, ValueError):
                return False

        return compare, None
    if isinstance(value, SigmaExpansion):
        tests = [_value_test(v, keyword) for v in value.values]
        fns = [t for t, _ in tests]
        return (lambda v: any(f(v) for f in fns)), _union([n for _, n in tests])
    msg = f"unsupported modifier: {type(value).__name__}"
    raise Unsupported(msg)


def _node(
    node: Any, fields: dict[str, Getter], verbatim: frozenset[str]
) -> tuple[Predicate, Needs]:
    if isinstance(node, ConditionAND | ConditionOR):
        kids = [_node(a, fields, verbatim) for a in node.args]
        fns = [k for k, _ in kids]
        if isinstance(node, ConditionAND):
            known = [n for _, n in kids if n is not None]
            best = max(known, key=lambda n: min(len(x) for x in n)) if known else None

            def all_(ev: SecurityEvent, line: str, low: str) -> bool:
                return all(f(ev, line, low) for f in fns)

            return all_, best
        union = _union([n for _, n in kids])

        def any_(ev: SecurityEvent, line: str, low: str) -> bool:
            return any(f(ev, line, low) for f in fns)

        return any_, union
    if isinstance(node, ConditionNOT):
        inner, _ = _node(node.args[0], fields, verbatim)
        return (lambda ev, line, low: not inner(ev, line, low)), None
    if isinstance(node, ConditionFieldEqualsValueExpression):
        name = node.field
        get = fields.get(name)
        if get is None:
            msg = f"unknown field: {name}"
            raise Unsupported(msg)
        test, needs = _value_test(node.value, keyword=False)
        if name not in verbatim:
            needs = None
        return (lambda ev, line, low: test(get(ev, line))), needs
    if isinstance(node, ConditionValueExpression):
        value = node.value
        if isinstance(value, SigmaString) and not isinstance(value, SigmaCasedString):
            t, needs = _string_test(value, keyword=True)
            return (lambda ev, line, low: t(low)), needs
        test, needs = _value_test(value, keyword=True)
        return (lambda ev, line, low: test(line)), needs
    if node is None:
        msg = "empty condition"
        raise Unsupported(msg)
    msg = f"unsupported condition: {type(node).__name__}"
    raise Unsupported(msg)


def compile_rule(
    rule: SigmaRule, fields: dict[str, Getter], verbatim: frozenset[str]
) -> tuple[Predicate, Needs]:
    """The predicate of ``rule`` (fields already renamed by its log source's pipeline) and
    its prefilter literals. ``verbatim``: fields whose values appear as such in the raw
    line, so their literals can prefilter.

    Raises
    ------
    Unsupported
        With a stable reason.
    """
    conds = rule.detection.parsed_condition
    preds = [_node(c.parsed, fields, verbatim) for c in conds]
    if len(preds) == 1:
        return preds[0]
    fns = [p for p, _ in preds]
    union = _union([n for _, n in preds])
    return (lambda ev, line, low: any(f(ev, line, low) for f in fns)), union
