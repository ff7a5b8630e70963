"""The layer rules of ARCHITECTURE.md, checked on the source: who may import whom, and no cycles.

Every module of ``choreo/`` is parsed with :mod:`ast`; every import of a choreo module
counts, wherever it is written (at the top, inside a function, under ``TYPE_CHECKING``),
because each one is a dependency a reader has to follow. A module belongs to the layer of
the longest prefix in :data:`LAYERS` that names it; :data:`MAY_IMPORT` lists the layers
each layer may import besides its own. To add a package, add a line to both tables (and
to the table in ARCHITECTURE.md).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "choreo"

LAYERS: dict[str, str] = {
    # module prefix -> layer (the longest matching prefix wins)
    "choreo.errors": "base",
    "choreo._version": "base",
    "choreo._extras": "base",
    "choreo.safety": "base",
    "choreo.model": "model",
    "choreo.avro": "avro",
    "choreo.transports": "transports",
    "choreo.choreography": "choreography",
    "choreo.store": "store",
    "choreo.runtime": "runtime",
    "choreo.tracker": "tracker",
    "choreo.orchestration": "orchestration",
    "choreo.observability": "observability",
    "choreo.viewer": "viewer",
    "choreo": "app",  # the package's facade (choreo/__init__.py) and __main__
    "choreo.cli": "app",
    "choreo.testing": "app",
    "choreo.orchestration.testing": "app",
}

_BELOW_RUNTIME = {"base", "model", "avro", "transports", "choreography", "store"}

MAY_IMPORT: dict[str, set[str]] = {
    # layer -> the other layers it may import
    "base": set(),
    "model": {"base"},
    "avro": {"base", "model"},
    "transports": {"base", "model"},
    "choreography": {"base", "model", "avro"},
    "store": {"base", "model", "transports"},
    "runtime": _BELOW_RUNTIME,
    "tracker": _BELOW_RUNTIME,
    "orchestration": _BELOW_RUNTIME | {"runtime", "tracker"},
    "observability": _BELOW_RUNTIME | {"runtime", "tracker", "orchestration"},
    "viewer": {"base", "model", "choreography", "tracker"},
    "app": set(LAYERS.values()),
}


def module_name(path: Path) -> str:
    """Return the dotted name of a source file under the repository root."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str | None:
    """Return the layer of a choreo module: that of its longest prefix in LAYERS."""
    name = module
    while name:
        if name in LAYERS:
            return LAYERS[name]
        name = name.rpartition(".")[0]
    return None


def resolve(imported: str) -> str | None:
    """Return the choreo module an imported name lives in (``a.b.C`` -> ``a.b``), if any."""
    name = imported
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(path: Path) -> Iterator[tuple[str, int]]:
    """Yield (choreo module, line) for every import of a choreo module in a source file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == "choreo" or name.startswith("choreo."):
                target = resolve(name)
                if target is not None:
                    yield target, node.lineno


def import_graph() -> dict[str, dict[str, int]]:
    """Return, per choreo module, the choreo modules it imports (with the first line)."""
    graph: dict[str, dict[str, int]] = {}
    for module, path in MODULES.items():
        edges = graph.setdefault(module, {})
        for target, line in imports_of(path):
            if target != module:
                edges.setdefault(target, line)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Return the strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(start: str) -> None:
        # iterative Tarjan: (node, iterator over its successors)
        work = [(start, iter(graph.get(start, {})))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(graph.get(succ, {}))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    return sorted(found)


def test_every_module_has_a_layer() -> None:
    """A new package must be placed in the table before it can be imported."""
    assert [m for m in MODULES if layer_of(m) is None] == []


def test_tables_agree() -> None:
    """Every layer named in LAYERS has its rule, and rules only name known layers."""
    layers = set(LAYERS.values())
    assert set(MAY_IMPORT) == layers
    assert all(allowed <= layers for allowed in MAY_IMPORT.values())


def test_no_forbidden_import() -> None:
    """Each module imports only its own layer and the layers MAY_IMPORT allows it."""
    forbidden = []
    for module, edges in import_graph().items():
        source = layer_of(module)
        assert source is not None
        for target, line in edges.items():
            target_layer = layer_of(target)
            assert target_layer is not None
            if target_layer != source and target_layer not in MAY_IMPORT[source]:
                where = MODULES[module].relative_to(ROOT)
                forbidden.append(f"{where}:{line}: {module} ({source}) imports {target} "
                                 f"({target_layer})")
    assert forbidden == []


# The one cycle left, type-only: every middleware hook's public signature names the
# Worker it is called with (imported under TYPE_CHECKING), and the Worker imports the
# hooks, the dispatcher and the invoker that call them. Typing the hooks against a
# protocol instead would change the signature users' middleware overrides. A cycle not
# listed here, or this one grown, fails the test.
PENDING_CYCLES: list[list[str]] = [
    [
        "choreo.runtime.dispatch",
        "choreo.runtime.invoke",
        "choreo.runtime.middleware",
        "choreo.runtime.worker",
    ],
]


def test_no_import_cycle() -> None:
    """No two modules import each other, directly or through others."""
    found = cycles(import_graph())
    assert [c for c in found if c not in PENDING_CYCLES] == []


def test_the_checker_sees_a_cycle_and_a_forbidden_edge() -> None:
    """The checks themselves work: a made-up cycle is found, a made-up edge is forbidden."""
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [
        ["a", "b", "c"]
    ]
    assert cycles({"a": {"b": 1}, "b": {}}) == []
    assert layer_of("choreo.model.events") == "model"
    assert layer_of("choreo.orchestration.testing") == "app"
    assert "runtime" not in MAY_IMPORT[layer_of("choreo.choreography.graph") or ""]



# The library never depends on its example application (the repository's ``services``
# package), except for the command that runs it.
MAY_IMPORT_EXAMPLES = {"choreo.cli.demo_cmd"}


def test_library_does_not_import_the_example_services() -> None:
    """Only ``choreo demo`` imports the example services (services.demo runs them)."""
    importers = set()
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            if any(n == "services" or n.startswith("services.") for n in names):
                importers.add(module)
    assert importers <= MAY_IMPORT_EXAMPLES


def test_architecture_md_states_the_same_rules() -> None:
    """The layer table of ARCHITECTURE.md lists, per layer, exactly what MAY_IMPORT allows."""
    documented: dict[str, set[str]] = {}
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] not in MAY_IMPORT:
            continue
        allowed = cells[3]
        if allowed == "every layer":
            documented[cells[0]] = set(LAYERS.values())
        else:
            documented[cells[0]] = {a.strip() for a in allowed.split(",")} - {"—"}
    expected = {layer: set(allowed) for layer, allowed in MAY_IMPORT.items()}
    expected["app"] = set(LAYERS.values())
    assert documented == expected
