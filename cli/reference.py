"""The README's CLI reference, generated from the commands themselves (a test keeps the README equal to it).

``python -m tagstore.cli.reference`` prints the table; ``python -m tagstore.cli.reference README.md`` rewrites
the part of the README between the ``cli-reference`` markers.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

START = "<!-- cli-reference:start -->"
END = "<!-- cli-reference:end -->"


def _param(p: Any) -> str:
    if p.param_type_name == "argument":
        name = (p.metavar or p.name.upper()) + ("..." if p.nargs == -1 else "")
        return name if p.required else f"[{name}]"
    opt = max(p.opts, key=len)
    if p.is_flag:
        return f"[{opt}]"
    kind = getattr(p.type, "name", "value").lower()
    value = p.metavar or {"integer": "N", "integer range": "N", "float": "X", "float range": "X"}.get(kind, kind.upper())
    return f"[{opt} {value}]" + ("..." if p.multiple else "")


def _summary(cmd: Any) -> str:
    text = " ".join((cmd.help or "").split())
    return text.replace("|", "\\|")


def rows(group: Any | None = None, prefix: str = "tagstore") -> list[tuple[str, str]]:
    """``(usage, what it does)`` for every command, in the order ``tagstore --help`` lists them."""
    if group is None:
        import typer

        from tagstore.cli.main import app

        group = typer.main.get_command(app)
    out = []
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            out += rows(cmd, f"{prefix} {name}")
            continue
        params = [_param(p) for p in cmd.params if p.name != "help"]
        usage = " ".join([f"{prefix} {name}", *params]).replace("|", "\\|")
        out.append((usage, _summary(cmd)))
    return out


def markdown() -> str:
    """The reference table, between its markers."""
    lines = [START, "", "| command | what it does |", "|---|---|"]
    lines += [f"| `{usage}` | {what} |" for usage, what in rows()]
    return "\n".join(lines + ["", END])


def section(text: str) -> str | None:
    """The generated part of a README's text (markers included), or None when it has none."""
    if START not in text or END not in text:
        return None
    return text[text.index(START) : text.index(END) + len(END)]


def main(argv: list[str]) -> None:
    if not argv:
        print(markdown())
        return
    path = Path(argv[0])
    text = path.read_text()
    old = section(text)
    if old is None:
        raise SystemExit(f"{path} has no {START!r} ... {END!r} markers")
    from tagstore.fileio import atomic_write

    atomic_write(path, text.replace(old, markdown()))


if __name__ == "__main__":
    main(sys.argv[1:])
