"""The wiring layer's shape (issue 23): llmtrain's import graph is acyclic, function-level imports
included; no file outside llmtrain/kernels/ is over 400 lines; no module keeps mutable state at module
level except the registries."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "llmtrain"
MAX_LINES = 400
# Modules whose module-level state is the point: the component registries; and data prep's worker encoder,
# which a ProcessPoolExecutor initializer can only leave in its worker process's module.
REGISTRY_MODULES = {"llmtrain.registry", "llmtrain.data.encode"}
MUTATORS = {"append", "extend", "insert", "add", "update", "setdefault", "pop", "popitem", "remove", "discard",
            "clear", "__setitem__", "__delitem__", "sort", "reverse"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The llmtrain modules `name` imports anywhere in its file (top level, functions, classes, ...)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def add(target: str) -> None:
        while target and target not in known:  # `import llmtrain.a.b` names the module a.b; a.b.C is in a.b
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "llmtrain":
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "llmtrain":
                continue
            for alias in node.names:
                if f"{source}.{alias.name}" in known:  # `from pkg import submodule`
                    add(f"{source}.{alias.name}")
                else:
                    add(source)
    return found


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def find_cycle(graph: dict[str, set[str]]):
    """One cycle of `graph` as a list of its modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_walk_sees_function_level_relative_and_submodule_imports(tmp_path):
    pkg = tmp_path / "llmtrain"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from llmtrain.sub import b\n")
    (pkg / "sub" / "b.py").write_text("class C:\n    def g(self):\n        from .. import a\n")
    known = {"llmtrain", "llmtrain.a", "llmtrain.sub", "llmtrain.sub.b"}
    graph = {"llmtrain.a": imports_of("llmtrain.a", pkg / "a.py", known),
             "llmtrain.sub.b": imports_of("llmtrain.sub.b", pkg / "sub" / "b.py", known)}
    assert graph == {"llmtrain.a": {"llmtrain.sub.b"}, "llmtrain.sub.b": {"llmtrain.a"}}
    assert find_cycle(graph) == ["llmtrain.a", "llmtrain.sub.b", "llmtrain.a"]


def test_no_import_cycle_inside_llmtrain():
    graph = import_graph()
    # a package's __init__ importing its own submodules is not a cycle by itself; a submodule importing
    # its package's __init__ back is (the walk counts both edges)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_config_is_at_the_bottom_of_the_graph():
    graph = import_graph()
    allowed = {"llmtrain", "llmtrain.errors", "llmtrain.schema", "llmtrain.eval", "llmtrain.eval.tasks"}
    assert graph["llmtrain.config"] <= allowed, sorted(graph["llmtrain.config"] - allowed)


def test_no_file_over_400_lines_outside_kernels():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if "kernels" not in p.relative_to(PACKAGE).parts and (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def _is_constant_name(name: str) -> bool:
    """ALL_CAPS (a leading underscore allowed), or a dunder such as __all__."""
    if name.startswith("__") and name.endswith("__"):
        return True
    return name.lstrip("_").replace("_", "").isalnum() and name.lstrip("_").isupper()


def _is_mutable_literal(value: ast.AST) -> bool:
    if isinstance(value, (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)):
        return True
    return (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id in {"dict", "list", "set", "defaultdict", "deque", "OrderedDict", "Counter"})


def module_state_problems(name: str, source: str) -> list[str]:
    """Why module `name` (its `source`) keeps mutable state at module level: a `global` statement, a
    module-level dict/list/set not named as a constant, or a constant that the module mutates."""
    tree = ast.parse(source)
    problems = [f"{name}:{node.lineno}: global {', '.join(node.names)}"
                for node in ast.walk(tree) if isinstance(node, ast.Global)]
    containers = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) and node.value is not None else []
        value = getattr(node, "value", None)
        for target in targets:
            if isinstance(target, ast.Name) and value is not None and _is_mutable_literal(value):
                if _is_constant_name(target.id):
                    containers[target.id] = node.lineno
                else:
                    problems.append(f"{name}:{node.lineno}: module-level mutable {target.id}")
    for node in ast.walk(tree):
        mutated = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATORS:
            mutated = node.func.value
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
            for target in (node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]):
                if isinstance(target, ast.Subscript):
                    mutated = target.value
        if isinstance(mutated, ast.Name) and mutated.id in containers:
            problems.append(f"{name}:{node.lineno}: constant {mutated.id} is mutated")
    return problems


def test_the_state_check_catches_globals_mutable_containers_and_mutated_constants():
    assert module_state_problems("m", "X = 1\nNAMES = {'a': 1}\n_ALLOWED = {1, 2}\n") == []
    assert module_state_problems("m", "_cache = {}\n") == ["m:1: module-level mutable _cache"]
    assert module_state_problems("m", "_x = None\ndef f():\n    global _x\n    _x = 1\n") == ["m:3: global _x"]
    assert module_state_problems("m", "SEEN = set()\ndef f(v):\n    SEEN.add(v)\n") == ["m:3: constant SEEN is mutated"]
    assert module_state_problems("m", "TABLE = {}\nTABLE['k'] = 1\n") == ["m:2: constant TABLE is mutated"]


def test_no_module_level_mutable_state_outside_registries():
    problems = [p for name, path in modules().items() if name not in REGISTRY_MODULES
                for p in module_state_problems(name, path.read_text())]
    assert not problems, "\n".join(problems)
