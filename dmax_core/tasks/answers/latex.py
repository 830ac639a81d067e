"""Balanced braces and ``\\boxed{}`` / ``\\fbox{}`` contents: the LaTeX structure both scorers read.

Brace matching is done in one pass (`_brace_pairs`) because model output can be degenerate (``\\boxed{``
repeated a thousand times) and scanning forward from every ``{`` would be quadratic.
"""

from __future__ import annotations


def braced(text: str, open_index: int) -> tuple[str | None, int | None]:
    """The content of the balanced ``{...}`` opening at `open_index` and its closing index, else (None, None)."""
    if open_index < 0 or open_index >= len(text) or text[open_index] != "{":
        return None, None
    depth = 0
    for index in range(open_index, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[open_index + 1 : index], index
    return None, None


def _brace_pairs(text: str) -> dict[int, int]:
    """Index of every ``{`` that gets closed -> index of its ``}``, in one pass.

    The same pairs as scanning forward from each ``{`` (what DMax does), without that scan's quadratic cost.
    """
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for index, char in enumerate(text):
        if char == "{":
            stack.append(index)
        elif char == "}" and stack:
            pairs[stack.pop()] = index
    return pairs


def _boxed_spans(text: str, command: str) -> list[tuple[str, int]]:
    """(stripped content, closing index) of every ``<command>{...}`` in `text`, left to right, not nested."""
    spans: list[tuple[str, int]] = []
    pairs = _brace_pairs(text) if command in text else {}
    start = 0
    while (index := text.find(command, start)) != -1:
        cursor = index + len(command)
        while cursor < len(text) and text[cursor].isspace():
            cursor += 1
        end = pairs.get(cursor) if cursor < len(text) and text[cursor] == "{" else None
        if end is None:
            start = cursor + 1
            continue
        spans.append((text[cursor + 1 : end].strip(), end))
        start = end + 1
    return spans


def all_boxed(text: str) -> list[str]:
    """Every boxed content, all ``\\boxed`` ones then all ``\\fbox`` ones (val_math.py's order)."""
    return [content for command in ("\\boxed", "\\fbox") for content, _ in _boxed_spans(text, command)]


def last_boxed_with_end(text: str) -> tuple[str | None, int | None]:
    """`last_boxed` and the index of its closing brace, else (None, None)."""
    spans = _boxed_spans(text, "\\boxed") + _boxed_spans(text, "\\fbox")
    if not spans:
        return None, None
    content, end = max(spans, key=lambda span: span[1])
    return content, end


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` or ``\\fbox{...}`` (balanced braces, stripped), else None.

    "Last" is by closing brace, as in val_math.py's ``extract_last_boxed_with_position``; a box with no
    closing brace is ignored, a box inside a box is part of the outer one's content.
    """
    return last_boxed_with_end(text)[0]
