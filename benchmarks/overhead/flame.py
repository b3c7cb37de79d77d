"""A flame graph (SVG) from py-spy's raw samples (`frame;frame;... count` lines), no other tool needed.

Each box is one frame; its width is its share of the samples, callers below callees. Hovering a
box shows the frame and its share (the SVG `<title>`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from html import escape

WIDTH, ROW, FONT = 1200.0, 16, 11
MIN_WIDTH = 0.5  # px: narrower boxes are left out (their share is in their caller's box)


@dataclass
class Node:
    name: str
    count: int = 0
    children: dict[str, Node] = field(default_factory=dict)


def tree(lines: Iterable[str]) -> Node:
    root = Node("all")
    for line in lines:
        stack, _, n = line.rstrip().rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        root.count += count
        node = root
        for frame in stack.split(";"):
            node = node.children.setdefault(frame, Node(frame))
            node.count += count
    return root


def _colour(name: str) -> str:
    h = zlib.crc32(name.encode())
    return f"rgb({205 + h % 50},{80 + (h >> 8) % 120},{40 + (h >> 16) % 40})"


def _boxes(node: Node, x: float, depth: int, scale: float, total: int, out: list[str]) -> int:
    width = node.count * scale
    if width < MIN_WIDTH:
        return depth
    label = f"{node.name} ({node.count / total:.1%})"
    y = depth * ROW
    text = escape(node.name[: int(width / (FONT * 0.6))]) if width > 3 * FONT else ""
    out.append(f'<g><title>{escape(label)}</title><rect x="{x:.1f}" y="{{Y{y}}}" width="{width:.1f}" '
               f'height="{ROW - 1}" fill="{_colour(node.name)}"/>'
               f'<text x="{x + 2:.1f}" y="{{T{y}}}">{text}</text></g>')  # fmt: skip
    deepest = depth
    for child in sorted(node.children.values(), key=lambda c: c.name):
        deepest = max(deepest, _boxes(child, x, depth + 1, scale, total, out))
        x += child.count * scale
    return deepest


def svg(lines: Iterable[str], title: str) -> str:
    """The flame graph of these raw samples, root at the bottom."""
    root = tree(lines)
    total = max(root.count, 1)
    out: list[str] = []
    depth = _boxes(root, 0.0, 0, WIDTH / total, total, out)
    height = (depth + 1) * ROW + 2 * ROW
    body = "\n".join(out)
    for d in range(depth + 1):  # flip: depth 0 (all samples) at the bottom
        y = height - (d + 1) * ROW
        body = body.replace(f"{{Y{d * ROW}}}", str(y)).replace(f"{{T{d * ROW}}}", str(y + ROW - 4))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH:.0f}" height="{height}" '
            f'font-family="monospace" font-size="{FONT}">\n<text x="4" y="{ROW}">{escape(title)} '
            f"({root.count} samples)</text>\n{body}\n</svg>\n")  # fmt: skip
