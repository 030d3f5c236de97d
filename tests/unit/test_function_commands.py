"""pyinfra passes ``state`` and ``host`` to a FunctionCommand's function only when its
parameters have exactly these names (pyinfra/api/command.py, FunctionCommand.execute);
otherwise it calls the function with the arguments alone, and the operation fails at run time
on a real host. Every FunctionCommand in the package must take them by these names."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "mmpush"


def function_commands() -> list[tuple[str, str, list[str]]]:
    """(module, function name, its parameter names) of every ``FunctionCommand(f, ...)``."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        functions = {
            node.name: [arg.arg for arg in node.args.args]
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "FunctionCommand"
                and node.args
                and isinstance(node.args[0], ast.Name)
            ):
                name = node.args[0].id
                found.append((str(path.relative_to(PACKAGE)), name, functions.get(name, [])))
    return found


def test_there_are_function_commands_to_check() -> None:
    assert len(function_commands()) >= 8


def test_every_function_command_takes_state_and_host() -> None:
    wrong = [
        f"{module}: {name}({', '.join(args)})"
        for module, name, args in function_commands()
        if args[:2] != ["state", "host"]
    ]
    assert wrong == []
