"""Edits of an ONNX graph in place, shared by the exporters (edgekd/export/) and the TensorRT grid
models (runtimes/tensorrt/grid.py): new node lists, and initializers nothing reads any more dropped."""

from __future__ import annotations

from collections.abc import Iterable

import onnx


def prune_initializers(graph: onnx.GraphProto) -> None:
    """Drop the initializers no node reads and no graph output names."""
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def replace_nodes(graph: onnx.GraphProto, nodes: Iterable[onnx.NodeProto]) -> None:
    """Make ``nodes`` the graph's nodes (in that order), then prune the initializers they left unread."""
    nodes = list(nodes)
    del graph.node[:]
    graph.node.extend(nodes)
    prune_initializers(graph)
