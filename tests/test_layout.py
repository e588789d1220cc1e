"""The package's layers import only downward, with no cycles, and the README's layout section
names every folder and root module of the package."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "minigrad_lm"
README = PACKAGE.parent / "README.md"

# Bottom first: a module may import its own layer and the ones before it, never a later one.
LAYERS = ["io", "backend", "engine", "nn", "optim", "models", "data", "inference", "checkpoints",
          "cli", "cloze", "train", "generate", "classify", "answer", "evaluate", "translate", "explain",
          "export",
          "plot", "testing"]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.Module) -> set[int]:
    """The ids of the nodes under ``if TYPE_CHECKING:``: names for type hints, never run."""
    return {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
            and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
            for stmt in block.body for n in ast.walk(stmt)}


def _imports(path: Path) -> set[str]:
    """The package modules ``path`` imports when it runs, at the top or inside functions."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    hints = _type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in hints:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == PACKAGE.name:
                target = node.module
            else:
                continue
            folder = PACKAGE.parent.joinpath(*target.split("."))
            modules = [f"{target}.{a.name}" for a in node.names
                       if (folder / f"{a.name}.py").exists() or (folder / a.name).is_dir()]
            found.update(modules or [target])
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE.name)
    return found


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the package's __init__, the public face


def test_every_module_imports_only_its_layer_or_the_ones_below():
    upward = [f"{a} imports {b}" for a, targets in _graph().items() for b in targets
              if _layer(a) is not None and LAYERS.index(_layer(b)) > LAYERS.index(_layer(a))]
    assert not upward


def test_every_root_module_and_folder_has_a_layer():
    names = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    names |= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert names == set(LAYERS)


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, str] = {}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles


def test_the_readme_layout_names_every_folder_and_root_module():
    text = README.read_text(encoding="utf-8")
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    tree = section.split("```", 2)[1]
    listed = set(re.findall(r"^  ([a-z_]+)(?:/|\.py)", tree, flags=re.M))
    listed |= {n for line in re.findall(r"^  ([a-z_.]+(?: [a-z_.]+)*)  ", tree, flags=re.M)
               for n in re.findall(r"([a-z_]+)\.py", line)}
    actual = {p.stem for p in PACKAGE.glob("*.py")} | {
        p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert listed == actual


INFERENCE_CLIS = ("generate", "classify", "answer", "evaluate", "translate", "explain", "export",
                  "plot")


def test_the_inference_commands_never_import_the_trainer():
    """Not even through another module: checkpoints, scoring and readers live below train/."""
    graph = _graph()
    for cli in INFERENCE_CLIS:
        seen, todo = set(), [f"{PACKAGE.name}.{cli}"]
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo.extend(graph.get(module, ()))
        assert not [m for m in seen if _layer(m) == "train"], cli


def test_importing_an_inference_command_loads_no_training_code():
    code = ("import importlib, sys\n"
            f"for cli in {INFERENCE_CLIS!r}:\n"
            "    importlib.import_module('minigrad_lm.' + cli)\n"
            "print(sorted(m for m in sys.modules if m.startswith('minigrad_lm.train')\n"
            "             or m.split('.')[0] in ('tqdm', 'mpi4py')))\n")
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]"
