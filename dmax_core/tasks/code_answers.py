"""Code answers for HumanEval-Instruct and MBPP: extract the code from a model's answer, build the test program.

The program is then run by `dmax_core.sandbox` (pass@1 = the fraction of programs that pass). This module
imports only the standard library and defines no `Task`.

What the official DMax repository does (github.com/czg1225/DMax, commit 82bc29ec433d, read for facts)
---------------------------------------------------------------------------------------------------
Files: `dInfer/evaluations/tasks/humaneval/{humaneval.yaml, humaneval_instruct.yaml, utils.py}`,
`dInfer/evaluations/tasks/mbpp_sanitized/{mbpp_sanitized_llada_mini.yaml, utils.py}` (the two `utils.py`
share the same extraction code), the model class `dInfer/evaluations/eval_dinfer_sglang.py` and the script
`dInfer/evaluations/eval_llada_dmax_code.sh` (lm-evaluation-harness, `--apply_chat_template`).

* Prompts (`doc_to_text`, zero-shot, chat template applied): `humaneval_instruct_prompt` and `mbpp_prompt`
  below reproduce them. MBPP is the sanitized set (`Muennighoff/mbpp`, `sanitized-mbpp.json`, split `train`).
* The answer is the whole generation up to the first EOS: the YAML `until` stop strings (`"\\n```\\n"`,
  `"\\ndef"`, ...) are never applied, because `generate_until` in `eval_dinfer_sglang.py` ignores them.
* `pass_at_1` runs two steps on each answer:
  1. `humaneval_postprocess`: the first match of the regex ``` ```(?:python)?\\n(.*?)\\n``` ``` (a ```python or
     bare ``` fence with its closing fence), stripped; without a match, the whole answer, stripped.
  2. `_process_answer`: a list of regexes for `[BEGIN]`/`DONE` markers and for fences (including an
     unclosed ```python or ``` fence, taken to the end of the text), then cut at the first remaining ```,
     unescape markdown `\\_` to `_`, strip; then `ast.parse` and keep only the top-level
     `FunctionDef`/`AsyncFunctionDef`/`ClassDef`/`Import`/`ImportFrom` nodes, joined as
     `"\\n\\n".join(ast.unparse(node))`. If the code does not parse, or has none of those nodes, it is kept
     as it is. (That step also does `import astor` inside the `try`; without astor installed the
     ImportError is swallowed and the unfiltered code is scored. Nothing in the repository installs astor,
     so which one the published numbers used is not recorded; we filter, as the code intends.)
* Scoring: Hugging Face `evaluate`'s `code_eval`, whose program is `candidate + "\\n" + reference`, run with
  its default 3.0 s timeout. The HumanEval reference (`doc_to_target`) is `test + "\\ncheck(entry_point)"`;
  the original prompt is NOT prepended (the lm-eval `build_predictions` filter is commented out), so the
  prompt's imports (`from typing import List`) count only if the model wrote them. The MBPP reference is
  `"\\n".join(test_list)`; the dataset's `test_imports` are NOT used.

What this module does, and where it differs
-------------------------------------------
`strict=False` (DMax-compatible): `first_python_block`, else the whole answer; strip; unescape `\\_`;
`keep_definitions`. Differences, all in rare answers: ```py and ```python3 fences and other case
spellings are taken like ```python (DMax's step 1 misses them and its later regexes keep the "py" line,
which filtering then drops, so the result is usually the same); a fence in another language (```text) is skipped
rather than re-entered at its closing fence; `[BEGIN]`/`DONE` markers (MBPP's few-shot format, absent from
these zero-shot prompts) are ignored.
`strict=True`: the first python block exactly as written (no stripping, unescaping, node filtering, and no
fall back to the whole answer: no block means an empty candidate, which fails).
Neither the prompt's imports nor MBPP's `test_imports` are added unless asked (`prompt_imports=True`,
`test_imports=...`), so the defaults build DMax's programs.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence

PYTHON_FENCE_LANGUAGES = frozenset({"", "python", "python3", "py"})
_FENCE = "```"
_OPENING_FENCE = re.compile(r"```([^\n`]*)(?:\n|\Z)")
_DEFINITIONS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)

HUMANEVAL_INSTRUCT_TEMPLATE = (
    "Write a solution to the following problem and make sure that it passes the tests:\n```python\n{prompt}\n```\n\n"
    "Please enclose your code within delimiters as follows:\n```python\n# YOUR CODE HERE\n```\n\n"
)
MBPP_TEMPLATE = (
    "You are an expert Python programmer, and here is your task: {text} Your code should pass these tests:\n\n"
    "{tests}\n\nPlease enclose your code within delimiters as follows:\n```python\n# YOUR CODE HERE\n```\n\n"
)


def humaneval_instruct_prompt(prompt: str) -> str:
    """DMax's `humaneval_instruct` user message for a HumanEval `prompt` (before the chat template)."""
    return HUMANEVAL_INSTRUCT_TEMPLATE.format(prompt=prompt)


def mbpp_prompt(text: str, test_list: Sequence[str]) -> str:
    """DMax's `mbpp_sanitized_llada_mini` user message: `text` is the sanitized set's `prompt` field."""
    return MBPP_TEMPLATE.format(text=text, tests="\n".join(test_list))


def first_python_block(text: str) -> str | None:
    """The content of the first ```python (or ```py, ```python3, bare ```) fence in `text`, or None.

    The content runs from the line after the opening fence to the next ``` anywhere (as DMax cuts at the
    first remaining fence), without the newline before it; with no closing fence it runs to the end of the
    text (an answer cut off mid-block). Fences in other languages are skipped with their content. The
    content is returned as written: not stripped."""
    position = 0
    while True:
        opening = _OPENING_FENCE.search(text, position)
        if opening is None:
            return None
        info = opening.group(1).strip().lower()
        language = info.split()[0] if info else ""
        closing = text.find(_FENCE, opening.end())
        if language in PYTHON_FENCE_LANGUAGES:
            content = text[opening.end():] if closing < 0 else text[opening.end():closing]
            return content.removesuffix("\n") if closing >= 0 else content
        if closing < 0:
            return None
        position = closing + len(_FENCE)


def keep_definitions(code: str) -> str:
    """Only the top-level imports, functions and classes of `code`, each `ast.unparse`d, joined by blank lines.

    Top-level statements (prints, calls, `if __name__ == "__main__":`, asserts, and also module constants)
    are dropped, so an answer's own demo code cannot fail or hang the tests. As in DMax, code that does not
    parse, or that has no such node, is returned unchanged (stripped): it then fails, or passes, as written.
    `ast.unparse` drops comments and normalises formatting, which does not change behaviour."""
    try:
        tree = ast.parse(code)
        nodes = [node for node in tree.body if isinstance(node, _DEFINITIONS)]
        if not nodes:
            return code.strip()
        return "\n\n".join(ast.unparse(node) for node in nodes)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return code.strip()


def extract_code(answer: str, *, strict: bool = False) -> str:
    """The candidate code of a model's answer (`strict` as in the module docstring)."""
    block = first_python_block(answer)
    if strict:
        return "" if block is None else block
    code = (block if block is not None else answer).strip()
    return keep_definitions(code.replace("\\_", "_"))


def prompt_imports(prompt: str) -> str:
    """The top-level import statements of a HumanEval prompt (`from typing import List`), one per line."""
    try:
        tree = ast.parse(prompt)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return ""
    return "\n".join(ast.unparse(node) for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom))


def humaneval_program(
    answer: str, prompt: str, test: str, entry_point: str, *, strict: bool = False, with_prompt_imports: bool = False
) -> str:
    """The program DMax scores for a HumanEval answer: candidate code, the problem's `test`, `check(entry_point)`.

    `prompt` is used only with `with_prompt_imports=True`, which puts the prompt's imports first (DMax does
    not: a model that drops `from typing import List` fails there)."""
    parts = [prompt_imports(prompt)] if with_prompt_imports else []
    parts += [extract_code(answer, strict=strict), test, f"check({entry_point})"]
    return "\n".join(parts) + "\n"


def mbpp_program(
    answer: str, test_list: Sequence[str], test_imports: Sequence[str] = (), *, strict: bool = False
) -> str:
    """The program for an MBPP answer: candidate code, then `test_imports`, then the `test_list` asserts.

    DMax passes no `test_imports` (leave the default to build its exact program); given, they go after the
    candidate so they can help the tests but cannot repair a candidate that forgot its own imports."""
    parts = [extract_code(answer, strict=strict), *test_imports, *test_list]
    return "\n".join(parts) + "\n"
