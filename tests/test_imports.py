"""The package's import structure (STYLE.md): one importer per heavy dependency, no circle of modules that
import each other, and the dependency direction - login-node code free of torch/timm, tracking/ never
importing train/, models/ knowing nothing of config, data, training or tracking."""

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

import swat_dist
from swat_dist.models.zoo import ZOO

HEAVY = {"deepspeed", "ffcv", "webdataset", "mlflow", "submitit", "fvcore", "onnx", "onnxruntime", "boto3", "botocore"}
GPU_STACK = {"torch", "timm", "torchvision", "deepspeed", "ffcv", "fvcore", "numpy"}
ROOT = Path(swat_dist.__file__).parent
# What runs on a login node: the CLI's parsing, the config, submit / jobs / cancel / config / tracking-server.
LOGIN_NODE = {
    "swat_dist", "swat_dist.__main__", "swat_dist.cli", "swat_dist.config", "swat_dist.config_cli",
    "swat_dist.cluster.commands", "swat_dist.cluster.profile", "swat_dist.cluster.jobs", "swat_dist.cluster.submit",
    "swat_dist.cluster.sweep", "swat_dist.cluster.sweep_submit",
    "swat_dist.tracking.commands", "swat_dist.tracking.server", "swat_dist.train.ds_config",
    "swat_dist.train.checkpoint_paths", "swat_dist.models", "swat_dist.models.zoo", "swat_dist.progress",
}  # fmt: skip


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(absolute module name, at module level?) for every import in ``path``."""
    name = _name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    top = _run_at_import(tree.body)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                # `from . import x` imports the submodule x when there is one (the package itself only
                # when a name is not a submodule: its __init__ runs either way, see _loaded_at_import)
                subs = [f"{mod}.{a.name}" for a in node.names if _path(f"{mod}.{a.name}") is not None]
                out += [(m, id(node) in top) for m in ([mod] if len(subs) < len(node.names) else []) + subs]
            else:
                out.append((node.module or "", id(node) in top))
    return out


def _run_at_import(body: list[ast.stmt]) -> set[int]:
    """ids of the statements executed when the module is imported: not function bodies, not TYPE_CHECKING."""
    ids: set[int] = set()
    for node in body:
        ids.add(id(node))
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            ids |= _run_at_import(node.orelse)
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                ids |= _run_at_import([n for n in getattr(node, field, []) if isinstance(n, ast.stmt)])
            for handler in getattr(node, "handlers", []):
                ids |= _run_at_import(handler.body)
    return ids


def _path(module: str) -> Path | None:
    rel = Path(*module.split(".")[1:])
    for p in (ROOT / rel / "__init__.py", (ROOT / rel).with_suffix(".py")):
        if p.is_file():
            return p
    return None


GRAPH = {_name(p): _imports(p) for p in ROOT.rglob("*.py")}


def _importers() -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for module, imports in GRAPH.items():
        for name, _ in imports:
            if name.split(".")[0] in HEAVY:
                found[name.split(".")[0]].add(module)
    return found


def test_each_heavy_dependency_has_one_importer():
    offenders = {dep: mods for dep, mods in _importers().items() if len(mods) > 1}
    assert not offenders, f"imported from more than one module: {offenders}"


def test_scan_sees_the_fvcore_importer():
    # guards the scan itself: it must find the one module we know imports fvcore
    assert _importers()["fvcore"] == {"swat_dist.models.complexity"}


def _loaded_at_import(start: str) -> dict[str, list[str]]:
    """Every module importing ``start`` executes, with the chain that reaches it (module-level imports)."""
    chains, todo = {start: [start]}, [start]
    while todo:
        module = todo.pop()
        parents = module.split(".")
        for i in range(1, len(parents)):  # importing a.b.c runs a and a.b first
            pkg = ".".join(parents[:i])
            if pkg not in chains:
                chains[pkg] = [*chains[module], pkg]
                todo.append(pkg)
        for name, top in GRAPH.get(module, []):
            if top and name not in chains:
                chains[name] = [*chains[module], name]
                if name.startswith("swat_dist"):
                    todo.append(name)
    return chains


def test_login_node_code_imports_no_torch_statically():
    for start in sorted(LOGIN_NODE):
        assert start in GRAPH, start
        heavy = {m: c for m, c in _loaded_at_import(start).items() if m.split(".")[0] in GPU_STACK}
        assert not heavy, f"{start} imports the GPU stack at import time: {' -> '.join(min(heavy.values(), key=len))}"


def test_the_static_scan_would_see_a_torch_import():
    # guards the scan: the trainer does import torch at module level, through the chain it reports
    chains = _loaded_at_import("swat_dist.train.run")
    assert "torch" in chains and chains["torch"][0] == "swat_dist.train.run"


LOGIN_SESSION = """
import contextlib, io, sys
from swat_dist.cli import build_parser, main
import swat_dist.config
for argv in (["config", "-c", "configs/demo_digits.yaml"],
             ["submit", "-c", "configs/demo_digits.yaml", "--cluster", "local-test", "--dry-run"]):
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0, argv
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    build_parser().parse_args(["--help"])
print(" ".join(sorted(m for m in sys.modules if m.split(".")[0] in {GPU}) or "-"))
"""


def test_cli_config_and_submit_dry_run_leave_torch_and_timm_out_of_the_process():
    code = LOGIN_SESSION.replace("{GPU}", repr(GPU_STACK))
    repo = ROOT.parent
    done = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["-"], f"imported on a login-node path: {done.stdout}"


def test_import_swat_dist_then_timm_registers_the_models():
    code = (
        "import sys, swat_dist; assert 'timm' not in sys.modules and 'torch' not in sys.modules\n"
        "import timm; model = timm.create_model('swat_deit_micro_patch4_32')\n"
        "print(len(timm.list_models('swat_*')), type(model).__name__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    count, cls = done.stdout.split()
    assert int(count) >= 13 and cls == "SwatVisionTransformer"


@pytest.mark.parametrize("first", ["layers", "vit_blocks", "mlp_trunk"])
def test_importing_a_model_module_first_registers_every_model_once_it_is_done(first):
    # that module imports timm while it is half-imported; the families need its names (registration.py)
    code = (
        f"import sys, importlib; importlib.import_module('swat_dist.models.{first}'); import timm\n"
        "print(len(timm.list_models('swat_*')), 'swat_dist.models.swin' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    count, swin = done.stdout.split()
    assert int(count) == len([e for e in ZOO if e.name.startswith("swat_")]) and swin == "True"  # all, not one family


def _reaches(package: str, forbidden: set[str], module_level_only: bool = False) -> list[str]:
    return [
        f"{module} -> {name}"
        for module, imports in GRAPH.items()
        if module.startswith(package + ".") or module == package
        for name, top in imports
        if (top or not module_level_only) and any(name == f or name.startswith(f + ".") for f in forbidden)
    ]


def test_tracking_never_imports_training_code():
    assert not _reaches("swat_dist.tracking", {"swat_dist.train", "swat_dist.cluster", "swat_dist.models"})


def test_models_know_nothing_of_config_data_training_or_tracking():
    upward = {"swat_dist.config", "swat_dist.data", "swat_dist.train", "swat_dist.tracking", "swat_dist.cluster",
              "deepspeed", "mlflow"}  # fmt: skip
    assert not _reaches("swat_dist.models", upward)


def test_data_never_imports_training_tracking_or_cluster():
    assert not _reaches("swat_dist.data", {"swat_dist.train", "swat_dist.tracking", "swat_dist.cluster"})


# What each folder of data/ may import of swat_dist besides itself, as its __init__ says: one floor per
# folder, so a reader finds a thing by its folder's name and a new module cannot pull a floor up.
DATA_FLOORS = {
    "pixels": set(),
    "sources": {"data.pixels", "files"},
    "loaders": {"data.sources", "data.pixels", "config"},
    "convert": {"data.sources", "data.pixels", "files", "progress"},
    "sets": {"data.convert", "data.sources", "progress"},
}


def test_each_data_folder_imports_only_the_floors_below_it():
    for folder, allowed in DATA_FLOORS.items():
        package = f"swat_dist.data.{folder}"
        own = [package, *(f"swat_dist.{a}" for a in allowed)]
        found = [r.split(" -> ") for r in _reaches(package, {"swat_dist"})]
        wrong = [f"{m} -> {n}" for m, n in found if not any(n == o or n.startswith(o + ".") for o in own)]
        assert not wrong, f"{package} may import {sorted(allowed)} (its __init__ says so), not: {wrong}"


def test_the_floor_scan_would_see_an_import_from_data_loaders():
    # guards the scan: the loaders do import the sources (build -> sources.wds, inside a function)
    found = _reaches("swat_dist.data.loaders", {"swat_dist.data.sources"})
    assert "swat_dist.data.loaders.build -> swat_dist.data.sources.wds" in found


def test_the_direction_scan_would_see_an_upward_import():
    # guards the scan: training code does import tracking
    assert "swat_dist.train.run -> swat_dist.tracking.choose" in _reaches("swat_dist.train", {"swat_dist.tracking"})


def _module_graph() -> dict[str, set[str]]:
    """Each swat_dist module -> the swat_dist modules it imports, at module level or inside a function."""
    return {module: {n for n, _ in imports if n in GRAPH and n != module} for module, imports in GRAPH.items()}


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every group of two or more modules that reach each other through imports (Tarjan's strongly connected
    components), each sorted. A lazy import closes a circle as well as a module-level one: the modules still
    cannot be read, tested or moved apart."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = stack[stack.index(v) :]
            del stack[stack.index(v) :]
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_modules_import_each_other_round_a_circle():
    circles = _circles(_module_graph())
    assert not circles, "import circles (move the piece both use down to where both import it): " + "; ".join(
        " <-> ".join(c) for c in circles
    )


def test_the_circle_scan_would_see_a_circle():
    # guards the scan: a loop of three with a tail into it, and a lazy import counted as an edge
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}) == [["a", "b", "c"]]
    assert "swat_dist.train.spec" in _module_graph()["swat_dist.train.export"]  # inside export's functions
