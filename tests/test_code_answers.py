"""Code extraction for HumanEval-Instruct / MBPP answers (`dmax_core.tasks.code_answers`): hand-made edge cases.

The expected values follow DMax's scoring code (dInfer/evaluations/tasks/{humaneval,mbpp_sanitized}/utils.py);
the module docstring lists where this extraction deliberately differs."""

from __future__ import annotations

import pytest

from dmax_core.tasks import Task, code_answers
from dmax_core.tasks.code_answers import (
    extract_code,
    first_python_block,
    humaneval_instruct_prompt,
    humaneval_program,
    keep_definitions,
    mbpp_program,
    mbpp_prompt,
)

FENCE = "```"


def fenced(code: str, language: str = "python") -> str:
    return f"{FENCE}{language}\n{code}\n{FENCE}"


# ------------------------------------------------------------------------------------------- first_python_block


def test_no_fence_gives_none_and_the_whole_answer_is_used():
    answer = "def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n"
    assert first_python_block(answer) is None
    assert extract_code(answer) == "def add(a, b):\n    return a + b"
    assert extract_code(answer, strict=True) == ""


def test_first_of_two_fences_wins():
    answer = f"First:\n{fenced('x = 1')}\nThen:\n{fenced('y = 2')}\n"
    assert first_python_block(answer) == "x = 1"


def test_python_fence_with_trailing_prose():
    block = fenced("def f():\n    return 1")
    answer = f"Here you go.\n{block}\nThis returns one because ```inline``` says so.\n"
    assert first_python_block(answer) == "def f():\n    return 1"


def test_missing_closing_fence_runs_to_the_end():
    assert first_python_block("Sure.\n```python\ndef f():\n    return 1\n") == "def f():\n    return 1\n"
    assert first_python_block("```python") == ""


@pytest.mark.parametrize("language", ["", "py", "python3", "Python", "python title=x"])
def test_other_python_fence_spellings(language):
    assert first_python_block(f"text\n{fenced('x = 1', language)}") == "x = 1"


def test_fence_in_another_language_is_skipped():
    answer = f"Run:\n{fenced('pip install x', 'bash')}\nCode:\n{fenced('y = 2')}"
    assert first_python_block(answer) == "y = 2"
    assert first_python_block(fenced("pip install x", "bash")) is None


def test_block_content_is_returned_as_written():
    assert first_python_block(f"{FENCE}python\n\n    x = 1  \n{FENCE}") == "\n    x = 1  "


# --------------------------------------------------------------------------------------------- keep_definitions


def test_keep_definitions_drops_prints_calls_and_main_guard():
    code = (
        "import math\nfrom typing import List\n\nprint('hello')\n\n"
        "def area(r: float) -> float:\n    # a comment\n    return math.pi * r * r\n\n"
        "area(2)\n\nclass Box:\n    size = 3\n\nasync def fetch():\n    return 1\n\n"
        "@staticmethod\ndef decorated():\n    pass\n\n"
        "if __name__ == '__main__':\n    print(area(1))\nassert area(0) == 0\n"
    )
    kept = keep_definitions(code)
    assert "print" not in kept and "area(2)" not in kept and "__main__" not in kept and "assert" not in kept
    assert kept.startswith("import math\n\nfrom typing import List\n\ndef area(r: float) -> float:")
    assert "class Box:" in kept and "async def fetch():" in kept and "@staticmethod\ndef decorated():" in kept
    assert "# a comment" not in kept  # ast.unparse drops comments, as DMax's filtering does


def test_keep_definitions_drops_module_constants_like_dmax():
    kept = keep_definitions("MOD = 10**9 + 7\n\ndef f(x):\n    return x % MOD\n")
    assert kept == "def f(x):\n    return x % MOD"


def test_code_that_does_not_parse_is_kept_as_written():
    code = "  def f(:\n    return 1\n"
    assert keep_definitions(code) == code.strip()
    assert keep_definitions("a = 1\x00") == "a = 1\x00"  # null byte: ValueError, also kept


def test_code_without_definitions_is_kept_as_written():
    assert keep_definitions("x = 1\nprint(x)\n") == "x = 1\nprint(x)"
    assert keep_definitions("") == ""


# ------------------------------------------------------------------------------------------------ extract_code


def test_non_strict_unescapes_markdown_underscores_and_filters():
    answer = fenced("def is\\_even(n):\n    return n % 2 == 0\nprint(is\\_even(2))")
    assert extract_code(answer) == "def is_even(n):\n    return n % 2 == 0"
    assert extract_code(answer, strict=True) == "def is\\_even(n):\n    return n % 2 == 0\nprint(is\\_even(2))"


def test_strict_keeps_top_level_code():
    answer = fenced("def f():\n    return 1\nprint(f())")
    assert extract_code(answer, strict=True) == "def f():\n    return 1\nprint(f())"
    assert extract_code(answer) == "def f():\n    return 1"


def test_syntax_error_in_block_is_scored_as_written():
    answer = fenced("def f(:\n    return 1")
    assert extract_code(answer) == "def f(:\n    return 1"
    assert "def f(:" in humaneval_program(answer, "", "def check(c):\n    pass", "f")


# --------------------------------------------------------------------------------------------------- programs


HUMANEVAL_PROMPT = 'from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    """Sum."""\n'
HUMANEVAL_TEST = "\n\ndef check(candidate):\n    assert candidate([1, 2]) == 3\n"


def test_humaneval_program_is_candidate_test_and_check():
    answer = "Sure!\n" + fenced("def total(xs):\n    return sum(xs)\n\nprint(total([1]))") + "\nDone."
    program = humaneval_program(answer, HUMANEVAL_PROMPT, HUMANEVAL_TEST, "total")
    assert program == "def total(xs):\n    return sum(xs)\n" + HUMANEVAL_TEST + "\ncheck(total)\n"
    assert "from typing" not in program  # DMax does not prepend the prompt
    with_imports = humaneval_program(answer, HUMANEVAL_PROMPT, HUMANEVAL_TEST, "total", with_prompt_imports=True)
    assert with_imports.startswith("from typing import List\ndef total(xs):")


def test_humaneval_program_strict_keeps_the_block_as_written():
    answer = fenced("def total(xs):\n    return sum(xs)\nprint('hi')")
    program = humaneval_program(answer, HUMANEVAL_PROMPT, HUMANEVAL_TEST, "total", strict=True)
    assert program.startswith("def total(xs):\n    return sum(xs)\nprint('hi')\n")
    assert humaneval_program("no code here", HUMANEVAL_PROMPT, HUMANEVAL_TEST, "total", strict=True).startswith(
        "\n\n\ndef check"
    )


def test_mbpp_program_with_test_imports():
    answer = fenced("def root(x):\n    return math.sqrt(x)")
    tests = ["assert root(4) == 2", "assert root(9) == 3"]
    program = mbpp_program(answer, tests, ["import math"])
    assert program == "def root(x):\n    return math.sqrt(x)\nimport math\nassert root(4) == 2\nassert root(9) == 3\n"
    assert mbpp_program(answer, tests) == "def root(x):\n    return math.sqrt(x)\n" + "\n".join(tests) + "\n"


def test_prompts_follow_dmax_templates():
    prompt = humaneval_instruct_prompt("def f():\n    pass\n")
    assert prompt.startswith("Write a solution to the following problem and make sure that it passes the tests:\n")
    assert "```python\ndef f():\n    pass\n\n```" in prompt and prompt.endswith("# YOUR CODE HERE\n```\n\n")
    text = mbpp_prompt("Write a function to add.", ["assert add(1, 2) == 3", "assert add(0, 0) == 0"])
    assert text.startswith("You are an expert Python programmer, and here is your task: Write a function to add. ")
    assert "tests:\n\nassert add(1, 2) == 3\nassert add(0, 0) == 0\n\nPlease enclose" in text


def test_module_defines_no_task():
    assert not any(isinstance(value, type) and issubclass(value, Task) for value in vars(code_answers).values())
