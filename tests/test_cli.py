"""The command line: help, listings, clear errors (exit code 2, one line, no traceback)."""
import subprocess
import sys

from experiments.cli import main


def test_help_and_no_command(capsys):
    assert main([]) == 0
    assert "simulat" in capsys.readouterr().out


def test_compressors_lists_every_compressor(capsys):
    from distopt.compressors import COMPRESSORS

    assert main(["compressors"]) == 0
    out = capsys.readouterr().out
    for name in COMPRESSORS:
        assert f"\n{name} " in out
    assert "alpha = K/d" in out and "omega = 1/8" in out


def test_console_script_help():
    r = subprocess.run([sys.executable, "-m", "experiments", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "compressors" in r.stdout


def test_unknown_reproduction_is_a_clear_error(capsys):
    assert main(["reproduce", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "unknown reproduction 'nosuch'" in err and "Traceback" not in err
