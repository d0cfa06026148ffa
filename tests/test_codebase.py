"""The codebase's own rules: no import cycles (lazy imports count), and an installed wheel runs the CLI."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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


@pytest.mark.slow
def test_an_installed_wheel_runs_every_subcommands_help(tmp_path):
    """Built as a wheel and installed into a fresh environment outside the checkout, every subcommand's
    --help works: nothing the CLI needs lives only in the checkout (tests/, benchmarks/)."""
    from adae_stream.cli import build_parser

    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("adae_stream-*.whl")
    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300)  # its pip: ensurepip's
    python = env_dir / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # The dependencies (numpy, kafka-python, ...) come from this environment's site-packages, appended
    # after the wheel's: a plain path entry, so this environment's editable install of the checkout is
    # not activated (its .pth hooks run only in site directories, not in appended paths).
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run(
        [python, "-c", "import adae_stream; print(adae_stream.__file__)"],
        cwd=outside,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert where.startswith(str(site)), where  # the wheel's copy, not the checkout's
    script = env_dir / "bin" / "adae-stream"
    assert script.exists()
    names = sorted(build_parser()._subparsers._group_actions[0].choices)
    assert names == ["acls", "demo", "produce", "repository", "run", "tail", "train"]
    for command in [[], *[[name] for name in names]]:
        out = subprocess.run(
            [python, str(script), *command, "--help"], cwd=outside, env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, (command, out.stderr[-2000:])
        assert out.stdout.startswith(f"usage: adae-stream {' '.join(command)}".rstrip()), out.stdout[:200]


def test_the_readme_error_policy_is_the_code_and_covers_every_dead_letter_reason():
    from adae_stream.errors import DEAD_LETTER_REASONS, ERROR_POLICY, error_policy_table

    assert error_policy_table() in (ROOT / "README.md").read_text(), (
        "README's error policy table differs from ERROR_POLICY"
    )
    reasons = [r for row in ERROR_POLICY for r in row.reasons]
    assert sorted(reasons) == sorted(DEAD_LETTER_REASONS)  # each reason in exactly one row
    assert not any(row.stops and row.reasons for row in ERROR_POLICY)  # a dead-lettered record never stops us
