"""The code's shape: imports among picker3d's modules run one way (no cycle, also
counting imports inside functions), and no engine function is longer than a reader can hold."""
import ast
import os

import picker3d

ROOT = os.path.dirname(os.path.abspath(picker3d.__file__))
MAX_ENGINE_FUNCTION_LINES = 80


def _modules():
    """{dotted name: path} of every picker3d module."""
    out = {}
    for folder, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), os.path.dirname(ROOT))[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                out[".".join(rel)] = os.path.join(folder, f)
    return out


def _imports(name, path, modules):
    """The picker3d modules ``name`` imports, anywhere in the file."""
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            for a in node.names:
                # "from pkg import sub" imports the module pkg.sub, "from mod import name" mod
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
    return {m for m in found if m in modules and m != name}


def test_no_import_cycle_among_picker3d_modules():
    modules = _modules()
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
    # the check sees the imports: the training loop reaches picking, formats and the model file
    assert {"picker3d.engine.picking.tiles", "picker3d.engine.training.state"} <= graph[
        "picker3d.engine.training.loop"]


def test_no_engine_function_is_longer_than_80_lines():
    long = []
    for name, path in _modules().items():
        if not name.startswith("picker3d.engine"):
            continue
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_ENGINE_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {n} lines")
    assert not long, long


MAX_MODULE_LINES = 400


def test_no_picker3d_module_is_longer_than_400_lines():
    long = [f"{name}: {n} lines" for name, path in _modules().items()
            if (n := sum(1 for _ in open(path))) > MAX_MODULE_LINES]
    assert not long, long
