"""What the command line says about a mistake: exactly one line on stderr, no traceback."""
from __future__ import annotations

from shortcutlm.cli import main as cli_main


def one_line(capsys, command: list[str], code: int = 2) -> str:
    """Run ``shortcutlm COMMAND``; check it exits with ``code`` and printed one line on stderr; that line."""
    assert cli_main(command) == code
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]
