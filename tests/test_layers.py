"""The library's layers: imports flow one way only, phases -> runs -> lab -> systems -> measure -> core.

Every import of every module counts, those inside functions too: an upward import, even a lazy one,
is a circle waiting to happen and the sign of a file in the wrong folder.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "lib" / "ragperf"
LAYERS = ("core", "measure", "systems", "lab", "runs", "phases")  # lowest first
TOP = {"cli"}  # the entry point may import any layer


def _layer(module: str) -> str | None:
    """The layer of a dotted ragperf module name (None: outside ragperf, or the package itself)."""
    parts = module.split(".")
    if parts[0] != "ragperf" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in LAYERS or parts[1] in TOP else "?"


def _module_name(path: Path) -> str:
    return ".".join(("ragperf", *path.relative_to(LIB).with_suffix("").parts))


def _imports(source: str, module: str) -> list[tuple[int, str]]:
    """Every module ``source`` (the text of ``module``) imports, with its line, relative imports resolved."""
    package = module.rsplit(".", 1)[0] + "._" if module.endswith(".__init__") else module
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: -node.level] + ([base] if base else []))
            found += [(node.lineno, f"{base}.{alias.name}" if base == "ragperf" else base) for alias in node.names]
    return found


def test_every_module_sits_in_a_layer():
    strays = [str(p.relative_to(LIB)) for p in LIB.glob("*.py") if p.stem not in TOP and p.name != "__init__.py"]
    assert strays == [], f"modules outside the layers {LAYERS}: {strays}"


def test_imports_flow_downwards_only():
    upward = []
    for path in sorted(LIB.rglob("*.py")):
        here = _layer(_module_name(path))
        if here in TOP or here is None:
            continue
        for line, module in _imports(path.read_text(encoding="utf-8"), _module_name(path)):
            there = _layer(module)
            if there in (None, here):
                continue
            if there == "?" or there in TOP or LAYERS.index(there) > LAYERS.index(here):
                upward.append(f"{path.relative_to(LIB)}:{line} ({here}) imports {module} ({there})")
    assert upward == [], "imports against the layers' direction:\n  " + "\n  ".join(upward)


def test_the_checker_sees_lazy_and_relative_imports():
    """The walk finds imports inside functions and resolves relative ones (a checker that saw nothing would pass)."""
    source = "from . import procs\n\ndef f():\n    from ragperf.phases import phase\n    import ragperf.runs.execute\n"
    found = [name for _, name in _imports(source, "ragperf.core.x")]
    assert found == ["ragperf.core", "ragperf.phases", "ragperf.runs.execute"]
    assert [_layer(n) for n in found] == ["core", "phases", "runs"]


def test_every_package_is_installed():
    """pyproject lists the packages (one of them maps lab/ to ragperf_lab, which setuptools cannot find by
    itself): every package directory under lib/ragperf must be in that list."""
    config = tomllib.loads((LIB.parents[1] / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    on_disk = {".".join(("ragperf", *p.parent.relative_to(LIB).parts)) for p in LIB.rglob("__init__.py")}
    assert on_disk <= listed, f"packages missing from pyproject.toml: {sorted(on_disk - listed)}"
