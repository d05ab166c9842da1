"""The rules of the house (README, "Architecture"), read off every module's imports and calls.

Each rule is a function of a module's parsed source; the test fails naming the module, the line
and the rule it breaks. ``test_a_broken_import_is_caught`` shows every rule can fail.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "posecli"

#: Modules that import only the standard library, numpy and each other.
FOUNDATION = {"posecli.spec", "posecli.config", "posecli.pose", "posecli.errors"}

#: The command line's package: the only one importing typer and rich, printing, and importing
#: train/ (``posecli.cli.progress``: its progress bars).
CLI_LAYER = "posecli.cli"

#: What ``posecli.model`` may import besides the standard library and itself.
MODEL_MAY_IMPORT = {"torch", "numpy", "posecli.spec", "posecli.config"}


@dataclass(frozen=True)
class Module:
    """One module of the package: its dotted name and parsed source."""

    name: str
    tree: ast.Module

    def imports(self) -> list[tuple[int, str]]:
        """``(line, dotted name)`` of every import, relative ones resolved, nested ones too."""
        found = []
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                found += [(node.lineno, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = self._resolve(node)
                found += [(node.lineno, submodule(base, alias.name)) for alias in node.names]
        return sorted(set(found))

    def _resolve(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        package = self.name.split(".")
        if not self.is_package:
            package = package[:-1]
        package = package[: len(package) - node.level + 1]
        return ".".join([*package, *([node.module] if node.module else [])])

    @property
    def is_package(self) -> bool:
        return getattr(self.tree, "is_package", False)

    def calls_print(self) -> list[int]:
        return [
            node.lineno
            for node in ast.walk(self.tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "print"
        ]

    def environment_edits(self) -> list[int]:
        """Lines that assign to ``os.environ`` or ``sys.path`` or call their mutators."""
        lines = []
        for node in ast.walk(self.tree):
            targets: list[ast.expr] = []
            if isinstance(node, (ast.Assign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                targets = [t.value if isinstance(t, ast.Subscript) else t for t in targets]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                mutators = {"append", "insert", "extend", "update", "setdefault", "pop"}
                if node.func.attr in mutators:
                    targets = [node.func.value]
            if any(ast.unparse(t) in ("os.environ", "sys.path") for t in targets):
                lines.append(node.lineno)
        return lines


def load(path: Path, source: str | None = None) -> Module:
    """The module at ``path`` inside the package (``source`` replaces its text, for tests)."""
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    tree = ast.parse(source if source is not None else path.read_text(), str(path))
    tree.is_package = is_package  # type: ignore[attr-defined]
    return Module(".".join(parts), tree)


def submodule(base: str, name: str) -> str:
    """``base.name`` when that is a module of the package (``from posecli.io import sinks``),
    else ``base`` (``from posecli.config import DecodeConfig``)."""
    if not within(base, "posecli"):
        return base
    path = PACKAGE.parent.joinpath(*base.split("."), name)
    compiled = list(path.parent.glob(f"{name}.*.so")) if path.parent.is_dir() else []
    exists = path.with_suffix(".py").is_file() or path.is_dir() or compiled
    return f"{base}.{name}" if exists else base


def modules() -> list[Module]:
    return [load(path) for path in sorted(PACKAGE.rglob("*.py"))]


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def top(name: str) -> str:
    return name.split(".")[0]


def stdlib(name: str) -> bool:
    return top(name) in sys.stdlib_module_names or top(name) == "__future__"


def violations(module: Module) -> list[str]:
    """Every broken rule of ``module``: ``"posecli.x:LINE: what"``."""
    found = []
    name = module.name
    for line, imported in module.imports():
        where = f"{name}:{line}: imports {imported}"
        if name in FOUNDATION and not (
            stdlib(imported)
            or top(imported) == "numpy"
            or imported in FOUNDATION
            or imported == "posecli"
        ):
            found.append(f"{where}: spec/config/pose/errors import only stdlib, numpy, each other")
        if within(name, "posecli.model") and not (
            stdlib(imported)
            or within(imported, "posecli.model")
            or any(within(imported, allowed) for allowed in MODEL_MAY_IMPORT)
            or imported == "posecli"
        ):
            found.append(f"{where}: model/ imports only torch, spec and config")
        if within(name, "posecli.decode") and within(imported, "posecli.model"):
            found.append(f"{where}: decode/ never imports model/")
        if within(name, "posecli.io") and (
            within(imported, "posecli.model") or within(imported, "posecli.decode")
        ):
            found.append(f"{where}: io/ never imports model/ or decode/")
        if not within(name, CLI_LAYER) and top(imported) in ("typer", "rich", "click"):
            found.append(f"{where}: only cli/ imports typer and rich")
        if imported.endswith("._native") and not within(name, "posecli.decode"):
            found.append(f"{where}: only decode/ imports the compiled module")
        if within(imported, "posecli.train") and not (
            within(name, "posecli.train") or within(name, CLI_LAYER)
        ):
            found.append(f"{where}: train/ is imported only by cli/ and train/ itself")
    if not within(name, CLI_LAYER):
        found += [f"{name}:{line}: print: only cli/ prints" for line in module.calls_print()]
    found += [f"{name}:{line}: edits os.environ / sys.path" for line in module.environment_edits()]
    return found


def test_the_package_keeps_the_rules_of_the_house() -> None:
    assert len(modules()) > 30  # the walk found the package
    assert [problem for module in modules() for problem in violations(module)] == []


BROKEN = {
    "spec.py": "import torch\n",
    "config.py": "from posecli.loader import load_model\n",
    "model/imhn.py": "from posecli.decode import decode_poses\n",
    "decode/reference.py": "from ..model import IMHN\n",
    "io/draw.py": "from posecli.decode.native import decode\n",
    "estimator.py": "import typer\n",
    "refine.py": "from posecli.decode import _native\n",
    "evaluate.py": "from posecli.train.trainer import train\n",
    "tracking_demo.py": "print('hello')\n",
    "track.py": "import os\nos.environ['OMP_NUM_THREADS'] = '1'\n",
}


@pytest.mark.parametrize("relative", sorted(BROKEN))
def test_a_broken_import_is_caught(relative: str) -> None:
    """The same check fails on a module given one line that breaks a rule."""
    path = PACKAGE / relative
    original = path.read_text() if path.exists() else ""
    module = load(path, original + BROKEN[relative])
    assert len(violations(module)) == 1, violations(module)


def test_relative_imports_are_resolved() -> None:
    module = load(PACKAGE / "decode" / "__init__.py", "from .native import decode\n")
    assert [name for _, name in module.imports()] == ["posecli.decode.native"]
    module = load(PACKAGE / "decode" / "reference.py", "from ..model import IMHN\n")
    assert [name for _, name in module.imports()] == ["posecli.model"]
