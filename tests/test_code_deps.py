"""The stage code deps (`dmax_core.stages.code_deps`): a fake package whose closure is written out by hand,
the real stages' closures against what Python itself loads, and dvc.yaml against the closures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from dmax_core.stages.code_deps import PACKAGE, REPO, SCHEMA, SourceTree, code_deps
from dmax_core.stages.table import STAGES, get_stage

# A package with every kind of import the parser must follow or ignore. Importing `fakepkg.a` runs:
#   fakepkg/__init__.py        (the package of every module)
#   a -> b                     `from fakepkg import b`: a from-imported submodule
#   a -> box                   `from fakepkg import box`: a from-imported subpackage (box/__init__.py)
#   b -> c                     `from .c import VALUE`: relative, the name an attribute
#   b -> sub.lazy              inside a function, so it runs when the function does; also runs sub/__init__
#   c -> a                     a cycle
#   sub.lazy -> d              `from ..d import THING`: two levels up
#   sub.lazy -> deep.inner.leaf   `import fakepkg.deep.inner.leaf` also runs deep/ and deep/inner/__init__
#   d -> plugins               plugins/__init__ discovers one.py and two.py (import_submodules)
# and not: unused.py (imports a, is imported by nobody), typed.py (only under TYPE_CHECKING), deep/inner/
# other.py; json, os, collections, numpy and yaml are outside the package.
FAKE = {
    "fakepkg/__init__.py": "import json\n",
    "fakepkg/a.py": "import collections\n\nfrom fakepkg import b, box\n",
    "fakepkg/b.py": """
        from .c import VALUE


        def later():
            import os

            from fakepkg.sub import lazy
            return lazy, os, VALUE
        """,
    "fakepkg/c.py": "import fakepkg.a\n\nVALUE = 1\n",
    "fakepkg/box/__init__.py": "",
    "fakepkg/sub/__init__.py": "",
    "fakepkg/sub/lazy.py": "import yaml\n\nimport fakepkg.deep.inner.leaf\n\nfrom ..d import THING\n",
    "fakepkg/d.py": """
        from typing import TYPE_CHECKING

        import numpy

        import fakepkg.plugins

        if TYPE_CHECKING:
            from fakepkg import typed
        else:
            numpy = None
        THING = 2
        """,
    "fakepkg/typed.py": "",
    "fakepkg/unused.py": "import fakepkg.a\n",
    "fakepkg/deep/__init__.py": "",
    "fakepkg/deep/inner/__init__.py": "",
    "fakepkg/deep/inner/leaf.py": "",
    "fakepkg/deep/inner/other.py": "",
    "fakepkg/discovery.py": """
        import importlib
        import pkgutil


        def import_submodules(package_name, package_path):
            for module in pkgutil.iter_modules(package_path):
                importlib.import_module(f"{package_name}.{module.name}")
        """,
    "fakepkg/plugins/__init__.py": "from fakepkg.discovery import import_submodules\n\n"
                                   "import_submodules(__name__, __path__)\n",
    "fakepkg/plugins/one.py": "",
    "fakepkg/plugins/two.py": "",
}
CLOSURE_OF_A = {"fakepkg", "fakepkg.a", "fakepkg.b", "fakepkg.c", "fakepkg.box", "fakepkg.sub", "fakepkg.sub.lazy",
                "fakepkg.d", "fakepkg.deep", "fakepkg.deep.inner", "fakepkg.deep.inner.leaf", "fakepkg.plugins",
                "fakepkg.discovery", "fakepkg.plugins.one", "fakepkg.plugins.two"}
# Collapsed: box/, sub/ and plugins/ are wholly in the closure, deep/ is not (deep/inner/other.py).
COLLAPSED_PATHS_OF_A = ["fakepkg/__init__.py", "fakepkg/a.py", "fakepkg/b.py", "fakepkg/box", "fakepkg/c.py",
                        "fakepkg/d.py", "fakepkg/deep/__init__.py", "fakepkg/deep/inner/__init__.py",
                        "fakepkg/deep/inner/leaf.py", "fakepkg/discovery.py", "fakepkg/plugins", "fakepkg/sub"]


@pytest.fixture
def fake(tmp_path: Path) -> SourceTree:
    for name, source in FAKE.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip("\n"))
    return SourceTree(tmp_path, "fakepkg")


def _loaded_by_python(root: Path, package: str, module: str) -> set[str]:
    """The modules of `package` that a fresh interpreter has loaded after `import module`."""
    inside = f"m == {package!r} or m.startswith({package!r} + '.')"
    script = f"import json, sys; import {module}; print(json.dumps(sorted(m for m in sys.modules if {inside})))"
    done = subprocess.run([sys.executable, "-c", script], cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def test_the_closure_of_a_hand_built_package_is_the_hand_written_one(fake):
    assert fake.closure("fakepkg.a") == CLOSURE_OF_A
    assert fake.collapse({fake.path(name) for name in fake.closure("fakepkg.a")}) == COLLAPSED_PATHS_OF_A
    assert fake.closure("fakepkg.unused") == CLOSURE_OF_A | {"fakepkg.unused"}
    assert fake.closure("fakepkg.c") == CLOSURE_OF_A  # round the cycle c -> a -> b -> c
    assert fake.closure("fakepkg.deep.inner.other") == {"fakepkg", "fakepkg.deep", "fakepkg.deep.inner",
                                                        "fakepkg.deep.inner.other"}


def test_type_checking_imports_are_kept_apart(fake):
    assert fake.dependencies("fakepkg.d") == {"fakepkg", "fakepkg.plugins"}
    assert fake.dependencies("fakepkg.d", type_only=True) == {"fakepkg", "fakepkg.plugins", "fakepkg.typed"}
    assert {imp.line for imp in fake.imports("fakepkg.d") if imp.type_only} == {8}


def test_the_fake_closure_holds_everything_python_loads(fake):
    loaded = _loaded_by_python(fake.root, "fakepkg", "fakepkg.a")
    assert loaded <= CLOSURE_OF_A
    # `later()` was never called: sub.lazy, d and what they import are static-only, which is the point.
    assert loaded == {"fakepkg", "fakepkg.a", "fakepkg.b", "fakepkg.c", "fakepkg.box"}
    plugins = _loaded_by_python(fake.root, "fakepkg", "fakepkg.plugins")
    assert {"fakepkg.plugins.one", "fakepkg.plugins.two"} <= plugins <= fake.closure("fakepkg.plugins")


def test_a_missing_module_and_a_relative_import_past_the_top_are_one_line_errors(fake):
    (fake.root / "fakepkg/broken.py").write_text("from fakepkg.gone import x\n")
    (fake.root / "fakepkg/too_far.py").write_text("from ... import x\n")
    with pytest.raises(ValueError, match=r"^fakepkg/broken.py:1 imports fakepkg.gone, which has no source file"):
        fake.closure("fakepkg.broken")
    with pytest.raises(ValueError, match=r"too_far.py:1: relative import beyond the top-level package$"):
        fake.closure("fakepkg.too_far")


def _covers(deps: tuple[str, ...], path: str) -> bool:
    return any(path == dep or path.startswith(dep + "/") for dep in deps)


@pytest.mark.parametrize("stage", ["distill", "evaluate"])
def test_decoding_stages_depend_on_the_attention_rules_and_the_schema(stage):
    code = get_stage(stage).code
    for path in ("dmax_core/diffusion.py", "dmax_core/config.py", f"dmax_core/stages/{stage}.py",
                 "dmax_core/decoding/frame.py"):
        assert _covers(code, path), f"{stage} does not depend on {path}"
    assert not _covers(code, "dmax_core/stages/report.py") and not _covers(code, "dmax_core/tracking")


def test_the_schema_is_always_a_dep():
    assert code_deps("dmax_core.errors") == ("dmax_core/__init__.py", SCHEMA, "dmax_core/env.py",
                                             "dmax_core/errors.py")


def test_dvc_yaml_deps_are_each_stage_reads_and_its_module_closure():
    committed = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    tree = SourceTree(REPO, PACKAGE)
    for stage in STAGES:
        closure = tree.collapse({tree.path(name) for name in tree.closure(stage.run.__module__)} | {SCHEMA})
        assert committed[stage.name]["deps"] == ["${run_dir}/" + name for name in stage.reads] + closure


@pytest.mark.parametrize("stage", [stage.name for stage in STAGES])
def test_the_closure_holds_every_module_importing_the_stage_loads(stage):
    module = f"dmax_core.stages.{stage}"
    assert get_stage(stage).run.__module__ == module
    tree = SourceTree(REPO, PACKAGE)
    loaded = _loaded_by_python(REPO, PACKAGE, module)
    assert module in loaded and "dmax_core.config" in loaded
    assert loaded <= tree.closure(module), f"loaded but not in the closure: {sorted(loaded - tree.closure(module))}"
