"""Each heavy dependency is imported by at most one module of the package (STYLE.md principle 7)."""

import ast
from collections import defaultdict
from pathlib import Path

import swat_dist

HEAVY = {"deepspeed", "ffcv", "webdataset", "mlflow", "submitit", "fvcore"}


def _importers() -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    root = Path(swat_dist.__file__).parent
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in HEAVY:
                    found[name.split(".")[0]].add(str(path.relative_to(root)))
    return found


def test_each_heavy_dependency_has_one_importer():
    offenders = {dep: mods for dep, mods in _importers().items() if len(mods) > 1}
    assert not offenders, f"imported from more than one module: {offenders}"


def test_scan_sees_the_fvcore_importer():
    # guards the scan itself: it must find the one module we know imports fvcore
    assert _importers()["fvcore"] == {"models/complexity.py"}
