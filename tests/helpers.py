"""Helpers shared by test modules (tests/ is on pytest's pythonpath)."""
from batchtrain.cli import main


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `batchtrain argv...`, argparse's SystemExit included."""
    try:
        code = main([str(arg) for arg in argv])
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err
