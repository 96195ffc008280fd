"""``tq graph ID`` and the dependency part of ``tq show``: the graph around a task."""

from __future__ import annotations

from typing import Any

import click

from tq_kombu.admin import DependencyGraph

from .group import tq
from .output import Command, admin_for, emit, json_option


def node_label(node: dict[str, Any]) -> str:
    """``<task id> <task name> <outcome>[, message state]`` for one task."""
    held = node.get("state")
    if held and node.get("dead_reason"):
        held = f"{held}: {node['dead_reason']}"
    where = f", {held} in {node['queue']}" if held else ""
    return f"{node['task_id']} {node.get('task_name') or '-'} ({node['outcome']}{where})"


def describe_dependencies(summary: dict[str, Any]) -> None:
    """The parents and children lines of ``tq show``."""
    click.echo("")
    click.echo(
        f"outcome     {summary['outcome']} (on parent failure: {summary['on_parent_failure']})"
    )
    for title in ("parents", "children"):
        links = summary[title]
        click.echo(f"{title:<10}  {len(links)}")
        for link in links:
            click.echo(f"  {node_label(link)}")


def text(graph: DependencyGraph) -> None:
    """Each task, then each of its children indented under it."""
    children: dict[str, list[str]] = {}
    for parent, child in graph.edges:
        children.setdefault(parent, []).append(child)
    for task_id, node in graph.nodes.items():
        mark = "*" if task_id == graph.root else " "
        click.echo(f"{mark} {node_label(vars(node))}")
        for child in children.get(task_id, []):
            click.echo(f"    -> {child}")


def dot(graph: DependencyGraph) -> None:
    """Graphviz: one node per task (label: name and outcome), one edge per dependency."""
    click.echo("digraph tq {")
    click.echo("  rankdir=LR;")
    for task_id, node in graph.nodes.items():
        label = f"{node.task_name or '-'}\\n{task_id}\\n{node.outcome}"
        if node.state:
            label += f" / {node.state}"
        style = ", style=bold" if task_id == graph.root else ""
        click.echo(f'  "{task_id}" [label="{label}"{style}];')
    for parent, child in graph.edges:
        click.echo(f'  "{parent}" -> "{child}";')
    click.echo("}")


@tq.command(cls=Command)
@click.argument("task_id")
@click.option("--depth", default=2, show_default=True, help="Edges to follow up and down.")
@click.option("--dot", "as_dot", is_flag=True, help="Graphviz output (pipe to `dot -Tsvg`).")
@json_option
@click.pass_context
def graph(ctx: click.Context, task_id: str, depth: int, as_dot: bool, as_json: bool) -> None:
    """Print the dependency graph around TASK_ID: its parents and children, with states."""
    with admin_for(ctx) as admin:
        found = admin.dependency_graph(task_id, depth)
    if as_dot:
        dot(found)
        return
    emit(as_json, found.as_dict(), lambda: text(found))
