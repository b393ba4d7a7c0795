"""The bench's modules form no import circle (one used to: figures.py <-> tunnel.py),
at module level or inside functions, and every figure group can be chosen by name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from bench.run import GROUPS, select

_BENCH = Path(__file__).resolve().parent.parent / "bench"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n.split(".")[1] for n in names
                  if n.startswith("bench.") and (_BENCH / f"{n.split('.')[1]}.py").exists()}
    return found


def _graph() -> dict[str, set[str]]:
    return {p.stem: _imports(p) - {p.stem} for p in _BENCH.glob("*.py")}


def test_the_bench_modules_import_each_other_without_a_circle() -> None:
    graph = _graph()
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " -> ".join((*path, module))
        if module in done:
            return
        for other in sorted(graph.get(module, ())):
            visit(other, (*path, module))
        done.add(module)

    for module in sorted(graph):
        visit(module, ())
    assert {"figures", "tunnel"} <= graph["run"]  # the scan sees imports in functions


def test_only_the_runner_knows_every_figure_module() -> None:
    graph = _graph()
    assert [m for m, imports in graph.items() if "run" in imports] == ["__main__"]
    assert graph["stats"] == set()  # shared by the figure modules, importing none


@pytest.mark.parametrize(("name", "groups"), [
    ("cli_help_ms", ["cli_start"]),
    ("tunnel_fresh", ["tunnel_fresh"]),
    ("tunnel", ["tunnel_throughput", "tunnel_fresh", "tunnel_rss", "tunnel_cut",
                "tunnel_fds"]),
])
def test_a_figure_is_chosen_by_group_prefix_or_key(name: str, groups: list[str]) -> None:
    assert [g.name for g in select([name])] == groups


def test_an_unknown_figure_name_is_refused() -> None:
    with pytest.raises(ValueError, match="no figure named"):
        select(["nothing_like_it"])
    assert len({g.name for g in GROUPS}) == len(GROUPS)
