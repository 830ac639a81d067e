"""Which answer text is never handed to sympy or math-verify: inputs whose evaluation runs for minutes.

``sympify("10**10**10")`` computes a big-integer power inside C for minutes. The time limit would kill the
worker after `verify.GUARD_S`, but every such kill wastes that much time and a worker restart, and a
response can hold several such candidates; so they are recognised by their shape up front and compared
only as strings.
"""

from __future__ import annotations

import re

# Exponent operators (LaTeX ``^`` and Python ``**``), and a factorial of a 5+ digit number.
_EXPONENT = re.compile(r"\^|\*\*")
_BIG_FACTORIAL = re.compile(r"\d{5,}\s*!")
_CLOSERS = {"{": "}", "(": ")"}
_TOKEN = re.compile(r"-?[\w.]*")
# An answer, even a long tuple or interval, is far shorter; longer candidates are lines of prose.
_MAX_SYMBOLIC_CHARS = 2000
_MAX_OPERAND = 200


def _operand(text: str, start: int) -> tuple[str, int] | None:
    """The exponent operand starting at `start` (a braced/parenthesised group or a token) and its end; None
    if a group is not closed within `_MAX_OPERAND` characters."""
    while start < len(text) and text[start].isspace():
        start += 1
    if start < len(text) and text[start] in _CLOSERS:
        opener, closer, depth = text[start], _CLOSERS[text[start]], 0
        for index in range(start, min(len(text), start + _MAX_OPERAND)):
            depth += {opener: 1, closer: -1}.get(text[index], 0)
            if depth == 0:
                return text[start + 1 : index], index + 1
        return None
    match = _TOKEN.match(text, start)
    end = match.end() if match else start
    return text[start:end], end


def is_pathological(text: str) -> bool:
    """True for inputs whose evaluation can run for minutes inside C: an exponent
    whose operand holds another exponent or is followed by one (a tower), an integer exponent of five or
    more digits, a factorial of a five-digit number, an exponent group not closed within `_MAX_OPERAND`
    characters, or more than `_MAX_SYMBOLIC_CHARS` characters in all. Such candidates are only compared as
    strings."""
    if len(text) > _MAX_SYMBOLIC_CHARS or _BIG_FACTORIAL.search(text):
        return True
    for match in _EXPONENT.finditer(text):
        found = _operand(text, match.end())
        if found is None:
            return True
        operand, end = found
        if _EXPONENT.search(operand) or _EXPONENT.match(text[end:].lstrip()):
            return True
        if len(re.sub(r"\D", "", operand.split(".")[0])) >= 5:
            return True
    return False

