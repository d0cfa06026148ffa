"""The codebase's own rules: no import cycles between modules or between packages (lazy imports count),
Kafka's client only behind its seam, size limits, and an installed wheel runs the CLI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def module_names(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (packages by their __init__)."""
    modules = {}
    for path in package_dir.rglob("*.py"):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its body: at the top, inside functions,
    under TYPE_CHECKING. A name imported from a package counts as the submodule when there is one."""
    modules = module_names(package_dir)
    graph: dict[str, set[str]] = {name: set() for name in modules}

    def known(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names
                ]
            for target in targets:
                resolved = known(target)
                if resolved is not None:
                    graph[name].add(resolved)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, and modules importing themselves (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_sees_a_lazy_import_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import c\n")
    (pkg / "c.py").write_text("import typing\nif typing.TYPE_CHECKING:\n    import pkg.a\n")
    (pkg / "d.py").write_text("from pkg import a\n")
    assert cycles(import_graph(pkg)) == [["pkg.a", "pkg.c", "pkg.sub.b"]]


def test_no_import_cycles_in_the_package():
    graph = import_graph(ROOT / "adae_stream")
    assert "adae_stream.cli.train" in graph["adae_stream.cli"]  # the graph sees the package's own imports
    assert cycles(graph) == []


def parts_graph(graph: dict[str, set[str]], root: str = "adae_stream") -> dict[str, set[str]]:
    """The module graph folded into the root package's parts (its subpackages and top-level modules): a
    part imports another where any of its modules imports any of the other's."""

    def part(module: str) -> str:
        return ".".join(module.split(".")[:2]) if module != root else root

    parts: dict[str, set[str]] = {part(m): set() for m in graph}
    for module, targets in graph.items():
        parts[part(module)] |= {part(t) for t in targets if part(t) != part(module)}
    return parts


def test_the_package_cycle_finder_sees_two_packages_importing_each_other(tmp_path):
    pkg = tmp_path / "pkg"
    for sub in ("a", "b"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("from pkg.b import y\n")
    (pkg / "b" / "y.py").write_text("import typing\n")
    (pkg / "b" / "z.py").write_text("def f():\n    from pkg.a import x\n")  # not a module cycle: y, z differ
    graph = import_graph(pkg)
    assert cycles(graph) == []
    assert cycles(parts_graph(graph, "pkg")) == [["pkg.a", "pkg.b"]]


def test_no_import_cycles_between_the_packages():
    """stream/ and decisions/ both stand on feedback/, which stands on neither; monitoring/ implements
    stream's metrics contract and imports nothing of decisions/ (issue 38)."""
    parts = parts_graph(import_graph(ROOT / "adae_stream"))
    assert "adae_stream.feedback" in parts["adae_stream.stream"] & parts["adae_stream.decisions"]
    assert cycles(parts) == []


def imported_names(path: Path) -> set[str]:
    """Every module name a file imports, anywhere in its body (absolute imports)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module)
    return names


def test_kafka_is_imported_only_behind_the_client_seam():
    """adae_stream.clients is the one seam around kafka-python (its docstring says why)."""
    seam = ROOT / "adae_stream" / "clients"
    outside = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "adae_stream").rglob("*.py")
        if seam not in path.parents and any(n == "kafka" or n.startswith("kafka.") for n in imported_names(path))
    )
    assert outside == []
    assert any(n.startswith("kafka") for n in imported_names(seam / "__init__.py"))  # the check sees imports


def loaded_after_importing(*modules: str) -> set[str]:
    """Top-level packages a fresh interpreter holds after importing ``modules``."""
    code = (
        f"import sys\nfor m in {modules!r}: __import__(m)\n"
        "print(' '.join(sorted({n.split('.')[0] for n in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120)
    return set(out.stdout.split())


def test_the_layers_import_what_their_docstrings_promise():
    # the contract and the exceptions: neither TensorFlow nor Kafka
    light = loaded_after_importing("adae_stream.errors", "adae_stream.scoring", "adae_stream.version")
    assert not light & {"tensorflow", "keras", "kafka"}, light
    # the stream, the metrics, the wiring and the whole CLI (what --help loads): no TensorFlow
    stream = loaded_after_importing(
        "adae_stream.stream.app", "adae_stream.monitoring.metrics", "adae_stream.runner", "adae_stream.cli"
    )
    assert "kafka" in stream and not stream & {"tensorflow", "keras"}, stream


def test_the_readme_error_policy_is_the_code_and_covers_every_dead_letter_reason():
    from adae_stream.errors import DEAD_LETTER_REASONS, ERROR_POLICY, error_policy_table

    assert error_policy_table() in (ROOT / "README.md").read_text(), (
        "README's error policy table differs from ERROR_POLICY"
    )
    reasons = [r for row in ERROR_POLICY for r in row.reasons]
    assert sorted(reasons) == sorted(DEAD_LETTER_REASONS)  # each reason in exactly one row
    assert not any(row.stops and row.reasons for row in ERROR_POLICY)  # a dead-lettered record never stops us


MAX_CLASS_LINES, MAX_MODULE_LINES = 250, 400
GENERATED = {"open_inference_pb2.py", "open_inference_pb2.pyi"}


def test_no_class_over_250_lines_and_no_module_over_400():
    """Size limits that keep one job per class and module (README, "Changing the code")."""
    too_big = []
    for path in sorted((ROOT / "adae_stream").rglob("*.py")):
        if path.name in GENERATED:
            continue
        source = path.read_text()
        if source.count("\n") > MAX_MODULE_LINES:
            too_big.append(f"{path.relative_to(ROOT)}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                too_big.append(
                    f"{path.relative_to(ROOT)}: class {node.name}, {node.end_lineno - node.lineno + 1} lines"
                )
    assert too_big == []


def test_every_test_module_lives_in_the_folder_that_says_what_it_needs():
    stray = [p.name for p in (ROOT / "tests").glob("test_*.py")]
    assert stray == [], "put each test in tests/fast, tests/slow or tests/broker (README, Tests)"
    assert {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and (p / "__init__.py").exists()} >= {
        "fast",
        "slow",
        "broker",
    }
