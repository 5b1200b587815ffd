"""The packages of siba form layers along the data path: a package imports only packages below it
(lazy imports inside functions included; imports under ``if TYPE_CHECKING:`` are annotations
only), so that the pipeline never reaches up into the report, nor an attack into the code that
evaluates it."""

from __future__ import annotations

import ast
from pathlib import Path

import siba

# bottom to top; packages of one tuple are one layer and do not import each other
LAYERS = [
    ("errors",),
    ("runtime", "registry"),
    ("imaging", "figures"),
    ("data",),
    ("models",),
    ("training",),
    ("metrics",),
    ("attacks",),
    ("poisoning",),
    ("defenses",),
    ("experiments",),
    ("report",),
    ("reproduce",),
    ("cli",),
]
LEVEL = {name: i for i, layer in enumerate(LAYERS) for name in layer}
ROOT = Path(siba.__file__).parent


def imported_packages(path: Path, root: Path = ROOT) -> set[str]:
    """The top-level siba packages that the file at ``path`` (under ``root``) imports, anywhere in it."""
    here = path.relative_to(root).parts[:-1]  # the file's package, below siba
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {id(n) for guard in ast.walk(tree) if isinstance(guard, ast.If)
                   and getattr(guard.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(guard)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:  # annotations only: no dependency when the code runs
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(here[:len(here) - node.level + 1])
                parts = base + (node.module.split(".") if node.module else [])
                names = parts[:1] or [a.name for a in node.names]
            elif node.module and node.module.split(".")[0] == "siba":
                names = node.module.split(".")[1:2] or [a.name for a in node.names]
            else:
                continue
            found.update(names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("siba."))
    return found


def package_of(path: Path) -> str:
    return path.relative_to(ROOT).parts[0].removesuffix(".py")


def test_every_package_has_a_layer():
    packages = {package_of(p) for p in ROOT.rglob("*.py")} - {"__init__", "__main__"}
    assert packages == set(LEVEL), packages ^ set(LEVEL)


def test_a_package_imports_only_what_is_below_it():
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        pkg = package_of(path)
        if pkg in ("__init__", "__main__"):
            continue
        for other in imported_packages(path) - {pkg, "__version__"}:
            if other in LEVEL and LEVEL[other] >= LEVEL[pkg]:
                wrong.append(f"{path.relative_to(ROOT)} ({pkg}) imports {other}")
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_an_upward_import(tmp_path):
    (tmp_path / "attacks").mkdir()
    bad = tmp_path / "attacks" / "x.py"
    bad.write_text("import torch\nfrom . import labels\n\n\ndef f():\n    from ..experiments.pipeline import Pipeline\n"
                   "    from siba.report import y\n    import siba.cli.main\n\n\n"
                   "if TYPE_CHECKING:\n    from ..reproduce import z\n")
    assert imported_packages(bad, tmp_path) == {"attacks", "experiments", "report", "cli"}
