"""Imports run one way (docs/design.md): the wire format at the bottom, then what reads the
system (sources, samplers, virt), then the modules, then the agent that drives them.  Read
from the source files themselves, so a new import against the grain fails here."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "hsflowd"

# a layer may import from the layers listed for it (and from itself), nothing above;
# errors.py (one_line) is a leaf every layer may use
LAYERS = {
    "errors": {"errors"},
    "sflow": {"sflow", "errors"},
    "frames": {"sflow", "frames", "errors"},
    "netlink": {"netlink", "errors"},
    "libc": {"libc", "errors"},
    "privileges": {"privileges", "libc", "errors"},
    "config": {"config", "sflow", "netlink", "errors"},
    "sources": {"sources", "sflow", "frames", "netlink", "libc", "config", "errors"},
    "samplers": {"samplers", "sources", "sflow", "frames", "netlink", "libc", "privileges",
                 "config", "errors"},
    "virt": {"virt", "sources", "sflow", "frames", "netlink", "libc", "config", "errors"},
    "decode": {"decode", "sflow", "frames", "errors"},
}


def imports_of(path: Path):
    """(hsflowd's top-level part imported, line) for each import of the package in a file."""
    tree = ast.parse(path.read_text(), str(path))
    rel = path.relative_to(PACKAGE).with_suffix("")
    here = list(rel.parts)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level]
                target = base + (node.module.split(".") if node.module else [])
                if not target:      # "from . import x" at the top: x is the part
                    for alias in node.names:
                        yield alias.name, node.lineno
                    continue
                yield target[0], node.lineno
            elif node.module and node.module.startswith("hsflowd."):
                yield node.module.split(".")[1], node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("hsflowd."):
                    yield alias.name.split(".")[1], node.lineno


def test_imports_run_one_way():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        layer = rel.parts[0].removesuffix(".py")
        allowed = LAYERS.get(layer)
        if allowed is None:
            continue
        for part, line in imports_of(path):
            part = part.removesuffix(".py")
            if part not in allowed and part != "__init__":
                wrong.append(f"hsflowd/{rel}:{line} imports hsflowd.{part}")
    assert not wrong, "\n".join(wrong)


def test_the_agent_asks_the_supervisor_and_the_output_not_their_insides():
    """pollers.py and runtime.py use the supervisor's and the output's own methods."""
    for name in ("pollers.py", "runtime.py", "agent.py"):
        text = (PACKAGE / name).read_text()
        for inside in (".slots", ".running()", "output.builder", ".module."):
            assert inside not in text, f"hsflowd/{name} reaches into {inside}"
