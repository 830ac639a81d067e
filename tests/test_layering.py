"""A lower layer never imports a higher one (docs/layers.md).

A component is a module file or a subpackage directly under dmax_core/ (`sandbox.py` and `sandbox/` are
the same component); it may import its own modules and those of strictly lower layers, so two components
that share a layer import neither way. The imports are read by the one parser of the package's imports
(`dmax_core.stages.code_deps.SourceTree`): every statement counts, lazy ones inside functions and those
under `if TYPE_CHECKING:` included (no exemption is needed). dmax_core/__init__.py runs before every
module, so importing the package itself is not an edge; flows/ sits above all of dmax_core.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pytest

from dmax_core.stages.code_deps import PACKAGE, REPO, SourceTree

# Lowest first. Ties share a tuple: they import neither way.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "env", "registry", "metric_logger"),  # leaf helpers: import nothing of dmax_core
    ("files", "preflight", "__init__"),  # files, preflight raise errors; the package's __init__ configures env
    ("models",),
    ("tokenizer",),
    ("bundle",),  # a model + its tokenizer, written with checksums (files)
    ("sandbox",),
    ("tasks",),  # the code tasks run programs in the sandbox
    ("diffusion",),
    ("kernels",),
    ("decoding",),  # the frame: models, diffusion's attention rules, kernels, the policy registry
    ("objectives",),  # the training objectives' registry and loss pieces (diffusion's layout)
    ("config",),  # validates task, policy and objective knobs against their registries
    ("training",),  # the trainer reads TrainConfig
    ("evaluation",),
    ("trajectories",),
    ("results",),
    ("tracking",),
    ("stages", "integrations"),  # the pipeline; the lm-eval, transformers and diffusers adapters
    ("benchmark", "export"),  # runs stages; reads a run's records (stages' layout, tracking) for a hub export
    ("cli",),
    ("__main__",),
)
ABOVE_PACKAGE = ("flows",)  # dmax_core never imports these
# Real upward imports, each a reason to move code, kept here so that the test fails when one is fixed
# (remove it then) or a new one appears. (importing file, component imported) -> why it exists.
KNOWN_UPWARD: Mapping[tuple[str, str], str] = {}


def component(module: str) -> str:
    """`dmax_core.x.y` -> `x`; the package itself -> `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


@dataclass(frozen=True)
class Violation:
    path: str  # the importing file
    imported: str  # the component it imports ("" when the file's own component is in no layer)
    text: str  # the readable line


def layer_violations(graph: Mapping[str, Iterable[str]], layers: tuple[tuple[str, ...], ...]) -> list[Violation]:
    """One per (file, component it imports) that is not strictly lower than the file's own.

    `graph` maps a repository-relative file to the dmax_core modules it imports."""
    layer_of = {name: index for index, names in enumerate(layers) for name in names}
    found: list[Violation] = []
    for path in sorted(graph):
        own = component(path.removesuffix(".py").replace("/", "."))
        if own not in layer_of:
            found.append(Violation(path, "", f"{path} belongs to {own}, which is in no layer"))
            continue
        reported: set[str] = set()
        for target in sorted(graph[path], key=lambda name: (-name.count("."), name)):  # the deepest named
            other = component(target)
            if other == own or other in reported:
                continue
            reported.add(other)
            if other not in layer_of:
                text = f"{path} (layer {layer_of[own]}) imports {target}, which is in no layer"
            elif layer_of[other] >= layer_of[own]:
                where = "higher" if layer_of[other] > layer_of[own] else "the same layer"
                text = f"{path} (layer {layer_of[own]}) imports {target} (layer {layer_of[other]}, {where})"
            else:
                continue
            found.append(Violation(path, other, text))
    return found


@pytest.fixture(scope="module")
def tree() -> SourceTree:
    return SourceTree(REPO, PACKAGE)


@pytest.fixture(scope="module")
def graph(tree) -> dict[str, set[str]]:
    """Each dmax_core file -> the dmax_core modules its import statements name (TYPE_CHECKING ones too)."""
    return {tree.path(module): {target for imp in tree.imports(module) for target in tree.runs(module, imp)
                                if target != PACKAGE}
            for module in tree.files}


def test_no_lower_layer_imports_a_higher_one(graph):
    violations = layer_violations(graph, LAYERS)
    unknown = [v.text for v in violations if (v.path, v.imported) not in KNOWN_UPWARD]
    assert not unknown, "\n".join(unknown)
    gone = set(KNOWN_UPWARD) - {(v.path, v.imported) for v in violations}
    assert not gone, f"no longer imported upward, remove from KNOWN_UPWARD: {sorted(gone)}"


def test_every_component_has_a_layer_and_every_layer_a_component(tree):
    present = {component(module) for module in tree.files}
    named = [name for names in LAYERS for name in names]
    assert len(named) == len(set(named)), "a component is in two layers"
    assert present == set(named), f"in no layer: {sorted(present - set(named))}; gone: {sorted(set(named) - present)}"


def test_dmax_core_never_imports_flows(tree):
    found = [f"{tree.path(module)}:{imp.line} imports {imp.module}" for module in tree.files
             for imp in tree.imports(module) if imp.module.split(".")[0] in ABOVE_PACKAGE]
    assert not found, "\n".join(found)


def test_the_checker_names_each_violation_once():
    layers = (("errors",), ("models",), ("decoding", "tasks"))
    fake = {
        "dmax_core/errors.py": set(),
        "dmax_core/models/modeling.py": {"dmax_core.errors", "dmax_core.models.moe", "dmax_core.decoding",
                                         "dmax_core.decoding.frame"},
        "dmax_core/tasks/gsm8k.py": {"dmax_core.decoding", "dmax_core.models", "dmax_core.tasks.base"},
        "dmax_core/decoding/frame.py": {"dmax_core.models.modeling", "dmax_core.newthing"},
        "dmax_core/stray.py": {"dmax_core.errors"},
    }
    assert [v.text for v in layer_violations(fake, layers)] == [
        "dmax_core/decoding/frame.py (layer 2) imports dmax_core.newthing, which is in no layer",
        "dmax_core/models/modeling.py (layer 1) imports dmax_core.decoding.frame (layer 2, higher)",
        "dmax_core/stray.py belongs to stray, which is in no layer",
        "dmax_core/tasks/gsm8k.py (layer 2) imports dmax_core.decoding (layer 2, the same layer)",
    ]
    assert layer_violations({path: set() for path in fake if path != "dmax_core/stray.py"}, layers) == []


def test_docs_state_the_same_layers():
    """docs/layers.md lists the layers as `L<n>  comp, comp  why`; it must be this order."""
    text = (REPO / "docs" / "layers.md").read_text()
    rows = re.findall(r"^L(\d+) +(\w+(?:, \w+)*)", text, flags=re.M)
    assert [int(index) for index, _ in rows] == list(range(len(LAYERS)))
    assert tuple(tuple(names.split(", ")) for _, names in rows) == LAYERS
