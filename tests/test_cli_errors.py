"""Errors are mapped to messages once, in cli/main.py: one line on stderr, an exit code, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import typer

from espzoo.cli import main as cli_main
from espzoo.errors import EspzooError, TrainInterrupted


def _espzoo(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ESPZOO_HOME": str(home), "HF_HOME": str(home / "hf"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "espzoo.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.mark.parametrize("args", [("pull", "not/a/ref"), ("verify", "espzoo-test/never-pulled"),
                                  ("plan", "/no/such/model/folder")])
def test_a_user_error_is_one_line_and_exit_1(args: tuple[str, ...], tmp_path: Path) -> None:
    done = _espzoo(*args, home=tmp_path)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr + done.stdout


@pytest.fixture
def extra_command() -> Iterator[Callable[[Callable[[], None]], None]]:
    """Register a throwaway `boom` command on the real app for one test."""
    before = list(cli_main.app.registered_commands)

    def add(body: Callable[[], None]) -> None:
        cli_main.app.command("boom")(body)

    yield add
    cli_main.app.registered_commands[:] = before


def _boom_internal() -> None:
    raise KeyError("a bug")


def _boom_interrupt() -> None:
    raise KeyboardInterrupt


def _boom_training() -> None:
    raise TrainInterrupted("Training stopped after epoch 2; continue it with --resume.")


def _boom_domain() -> None:
    class Custom(EspzooError):
        exit_code = 3

    raise Custom("the thing is wrong; fix it.")


def test_an_internal_error_is_one_line_with_the_traceback_in_a_file(
    extra_command: Callable[[Callable[[], None]], None], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setenv("ESPZOO_HOME", str(tmp_path))
    extra_command(_boom_internal)
    assert cli_main.run(["boom"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: internal error: KeyError: 'a bug'; details in "), err
    report = Path(err[0].rsplit("details in ", 1)[1])
    assert report.parent == tmp_path / "crash"
    assert "Traceback" in report.read_text() and "_boom_internal" in report.read_text()


@pytest.mark.parametrize(("body", "code", "message"), [
    (_boom_interrupt, 130, ""),  # typer ends an interrupted command with exit 130 and no message
    (_boom_training, 130, "error: Training stopped after epoch 2; continue it with --resume."),
    (_boom_domain, 3, "error: the thing is wrong; fix it."),
])
def test_interrupts_and_domain_errors_map_to_their_codes(
    body: Callable[[], None], code: int, message: str, extra_command: Callable[[Callable[[], None]], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    extra_command(body)
    assert cli_main.run(["boom"]) == code
    err = capsys.readouterr().err
    assert err.strip() == message and "Traceback" not in err


def test_help_and_usage_errors_keep_clicks_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.run(["--help"]) == 0
    assert "Usage" in capsys.readouterr().out
    assert cli_main.run(["pull"]) == 2  # a missing argument: click's usage message
    assert "Missing argument" in capsys.readouterr().err


def test_every_domain_error_is_rooted_in_espzoo_error() -> None:
    from espzoo import errors

    # every error lives in espzoo.errors; all but two internal ones (a refused byte range, an SSL upstream that
    # cannot be fetched offline, both caught inside espzoo) are EspzooErrors the CLI maps to one sentence
    classes = [getattr(errors, name) for name in dir(errors) if name.endswith("Error")]
    internal = {errors.RangeError, errors.UpstreamUnavailableError}
    assert len(classes) > 30 and all(issubclass(c, EspzooError) for c in set(classes) - internal)
    assert issubclass(errors.TransferError, ValueError) and issubclass(errors.AudioFileMissingError, FileNotFoundError)
    assert typer.Exit is not None  # the CLI's own exits (fail()) still pass through run() with their code
