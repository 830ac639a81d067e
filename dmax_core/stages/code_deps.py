"""Which source files a module runs, read from the source (nothing is imported): a stage's DVC code deps.

A stage's output can change whenever any file its module imports changes, directly or through other
modules, so its code deps are the import closure of its module within the package, not a list kept by
hand. The parser follows every `import a.b`, `from a import b` (b may be a submodule), relative import and
import inside a function (a lazy import runs when the function does); importing `a.b.c` also runs
`a/__init__.py` and `a/b/__init__.py`. A package that calls `import_submodules` (plugin discovery,
`dmax_core.registry`) imports every module directly in it. Imports under `if TYPE_CHECKING:` never run and
are kept apart (`Import.type_only`). Module names computed at run time (`importlib.import_module(name)`)
are invisible here: the package uses them only through `import_submodules`.

`SourceTree` is the one parser of the package's imports: the code deps and the layering test read it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from dmax_core.registry import import_submodules

PACKAGE = "dmax_core"
REPO = Path(__file__).resolve().parents[2]
# The settings schema: every stage is handed its config through it (`dmax <stage>` validates the preset
# first), so a change to it, e.g. to a default, can change what any stage computes.
SCHEMA = "dmax_core/config.py"
_PLUGIN_DISCOVERY = import_submodules.__name__


@dataclass(frozen=True)
class Import:
    """One import statement, as absolute module names (a relative one is resolved against its module)."""

    module: str  # the module the statement names: `a.b` in `import a.b` and in `from a.b import c`
    names: tuple[str, ...]  # the names of `from a.b import c, d`: each may be a submodule (`a.b.c`)
    line: int
    type_only: bool  # under `if TYPE_CHECKING:`: read by type checkers, never run


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _submodule_names(package_dir: Path) -> tuple[str, ...]:
    """What `pkgutil.iter_modules` lists in a package directory: its modules and its subpackages."""
    modules = {path.stem for path in package_dir.glob("*.py") if path.name != "__init__.py"}
    packages = {path.parent.name for path in package_dir.glob("*/__init__.py")}
    return tuple(sorted(name for name in modules | packages if name.isidentifier()))


class _ImportCollector(ast.NodeVisitor):
    def __init__(self, path: Path, module: str) -> None:
        self.path = path
        self.module = module
        self.is_package = path.name == "__init__.py"
        self.imports: list[Import] = []
        self._type_only = False

    def _add(self, module: str, names: tuple[str, ...], node: ast.stmt | ast.expr) -> None:
        self.imports.append(Import(module, names, node.lineno, self._type_only))

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        outer, self._type_only = self._type_only, True
        for child in node.body:
            self.visit(child)
        self._type_only = outer
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, (), node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        names = tuple(alias.name for alias in node.names if alias.name != "*")
        self._add(self._absolute(node), names, node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        if name == _PLUGIN_DISCOVERY and self.is_package:
            self._add(self.module, _submodule_names(self.path.parent), node)
        self.generic_visit(node)

    def _absolute(self, node: ast.ImportFrom) -> str:
        if node.level == 0:
            return node.module or ""
        parts = self.module.split(".") if self.is_package else self.module.split(".")[:-1]
        if node.level - 1 >= len(parts):
            raise ValueError(f"{self.path}:{node.lineno}: relative import beyond the top-level package")
        base = parts[: len(parts) - (node.level - 1)]
        return ".".join([*base, node.module] if node.module else base)


def parse_imports(path: Path, module: str) -> tuple[Import, ...]:
    """Every import statement in the source file of `module`, wherever it sits (functions included)."""
    collector = _ImportCollector(path, module)
    collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return tuple(collector.imports)


def _parents(module: str) -> list[str]:
    """`a.b.c` -> [`a`, `a.b`, `a.b.c`]: what importing it runs, outermost first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


class SourceTree:
    """The modules of one package under `root`, by dotted name, and the imports between them."""

    def __init__(self, root: Path, package: str) -> None:
        self.root = root
        self.package = package
        if not (root / package / "__init__.py").is_file():
            raise ValueError(f"{root / package} is not a package (no __init__.py)")

    @cached_property
    def files(self) -> dict[str, Path]:
        """Module name -> source file, for every module of the package (`a/__init__.py` is `a`)."""
        files: dict[str, Path] = {}
        for path in sorted((self.root / self.package).rglob("*.py")):
            parts = path.relative_to(self.root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if all(part.isidentifier() for part in parts):
                files[".".join(parts)] = path
        return files

    def path(self, module: str) -> str:
        """The repository-relative source path of a module, with `/` separators."""
        return self.files[module].relative_to(self.root).as_posix()

    def imports(self, module: str) -> tuple[Import, ...]:
        return parse_imports(self.files[module], module)

    def _inside(self, name: str) -> bool:
        return name == self.package or name.startswith(self.package + ".")

    def runs(self, module: str, imp: Import) -> list[str]:
        """The package's modules one import statement of `module` runs: what it names, each from-imported
        name that is a submodule, and every package above them."""
        if not self._inside(imp.module):
            return []
        if imp.module not in self.files:
            raise ValueError(f"{self.path(module)}:{imp.line} imports {imp.module}, which has no source file "
                             f"under {self.root}")
        named = [imp.module, *(f"{imp.module}.{name}" for name in imp.names)]
        return [parent for target in named if target in self.files for parent in _parents(target)]

    def dependencies(self, module: str, *, type_only: bool = False) -> set[str]:
        """The package's modules that `module` itself runs when imported (with `type_only`: also the ones
        its `if TYPE_CHECKING:` imports name)."""
        return {target for imp in self.imports(module) if type_only or not imp.type_only
                for target in self.runs(module, imp)} - {module}

    def closure(self, module: str) -> set[str]:
        """Every module of the package that importing `module` runs, `module` and its packages included."""
        if module not in self.files:
            raise ValueError(f"no module {module} under {self.root}")
        seen: set[str] = set()
        todo = _parents(module)
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(self.dependencies(current) - seen)
        return seen

    def collapse(self, paths: set[str]) -> list[str]:
        """`paths` sorted, with every package directory whose `.py` files are all in it written once as the
        directory (the outermost such one), which keeps dvc.yaml short."""
        remaining = set(paths)
        by_directory: dict[str, set[str]] = {}
        for path in self.files.values():
            if path.name == "__init__.py":
                directory = path.parent.relative_to(self.root).as_posix()
                by_directory[directory] = {self.path(other) for other in self.files
                                           if self.path(other).startswith(directory + "/")}
        for directory in sorted(by_directory, key=lambda d: (d.count("/"), d)):
            members = by_directory[directory]
            if members <= remaining:
                remaining = (remaining - members) | {directory}
        return sorted(remaining)


def code_deps(module: str, tree: SourceTree | None = None) -> tuple[str, ...]:
    """The repository-relative files (or whole package directories) a stage module runs, and the schema."""
    tree = tree or SourceTree(REPO, PACKAGE)
    return tuple(tree.collapse({tree.path(name) for name in tree.closure(module)} | {SCHEMA}))
