"""README's table of the settings this agent accepts but does not act on, made from the
keyword table so that the two cannot drift (a test compares them).

    python -m hsflowd.config.docs > table.md      # paste between README's markers
"""

from __future__ import annotations

import sys
from typing import Dict, List, Tuple

from . import keywords as K

UNSUPPORTED = ("not supported yet: accepted (its settings are checked), named once in the log "
               "and by `hsflowd check`, and otherwise ignored")


def not_acted_on() -> List[Tuple[str, str]]:
    """(settings, what the agent does with them): the keywords it ignores, in the table's
    order, one row per reason; then the blocks it does not support yet."""
    rows: Dict[str, List[str]] = {}
    for block in K.BLOCKS.values():
        if not block.supported:
            continue
        for keyword in block.keywords:
            if keyword.ignored and not keyword.target:
                what = f"ignored: {keyword.ignored}"
                if keyword.prefer:
                    what += f"; write `{keyword.prefer}` instead"
                where = keyword.name if block.name == "sflow" else \
                    f"{block.name} {{ {keyword.name} }}"
                rows.setdefault(what, []).append(f"`{where}`")
    blocks = [f"`{k.name} {{ }}`" for k in K.BLOCKS["sflow"].keywords
              if k.kind == K.BLOCK and not K.BLOCKS[k.block].supported]
    return [(", ".join(where), what) for what, where in rows.items()] + [
        (", ".join(blocks), UNSUPPORTED)]


def markdown_table() -> str:
    """``not_acted_on`` as a Markdown table (a '|' inside a cell is escaped)."""
    out = ["| setting | what this agent does with it |", "|---|---|"]
    for where, what in not_acted_on():
        out.append("| " + " | ".join(cell.replace("|", "\\|") for cell in (where, what)) + " |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown_table())
