"""The `espzoo` app: registers each command group's module; nothing here imports torch or espnet.

    espzoo --help
    espzoo --version

Errors are mapped to messages here, once (as huggingface_hub's CLI does): an `EspzooError` is one line on stderr
and its exit code (1; 130 for an interrupted training run); Ctrl-C exits 130; anything else is a bug, told in one
line whose traceback goes to a file under $ESPZOO_HOME/crash/ (never onto the terminal), exit 1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from espzoo import __version__
from espzoo.cli import align, evaluate, export, finetune, hub, lm, mirror, plan, push, recommend, search
from espzoo.errors import EspzooError

INTERRUPTED = 130  # what a shell reports for a process ended by SIGINT


class _MappedErrors(TyperGroup):
    """The root group: whatever a command raises is mapped here, once, to a message and an exit code (so that
    `espzoo`, `python -m espzoo.cli.main` and typer's CliRunner all behave the same)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except EspzooError as err:
            sys.stderr.write(f"error: {err}\n")
            raise typer.Exit(err.exit_code) from None
        except (typer.Exit, typer.Abort, typer.TyperException, KeyboardInterrupt):
            raise  # typer's own: usage errors, fail()'s exits, Ctrl-C (exit 130)
        except BrokenPipeError:
            if not _reader_left():
                raise  # another pipe (a child process, a socket): a bug, told by run()
            _silence_stdout()
            raise typer.Exit(0) from None
        except Exception as err:  # noqa: BLE001 - a bug: one line here, the traceback in a file
            sys.stderr.write(f"error: internal error: {_first_line(err)}; details in {_write_crash_report()}\n")
            raise typer.Exit(1) from None

app = typer.Typer(
    name="espzoo",
    help="Fine-tune ESPnet's pretrained speech models from the Hugging Face Hub on your own data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_MappedErrors,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Each command group registers itself; adding a group is one line here.
for module in (recommend, search, hub, plan, finetune, evaluate, align, lm, export, push, mirror):
    module.register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"espzoo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Fine-tune ESPnet's pretrained speech models from the Hugging Face Hub on your own data."""


def main(argv: Sequence[str] | None = None) -> None:
    code = run(argv)
    if code == INTERRUPTED:
        _end_now(code)
    sys.exit(code)


def _end_now(code: int) -> None:
    """Ctrl-C: end now. The interpreter's exit would join worker threads still downloading (huggingface_hub's pool
    finishes every file in flight first); their partial files resume on the next pull. atexit handlers still run."""
    import atexit
    import threading

    # Thread-pool workers are joined at exit even when daemonic (concurrent.futures registers them to be).
    pools = sys.modules.get("concurrent.futures.thread")
    workers = set(getattr(pools, "_threads_queues", None) or ())
    busy = [t for t in threading.enumerate()
            if t is not threading.main_thread() and t.is_alive() and (not t.daemon or t in workers)]
    if not busy:
        return
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def run(argv: Sequence[str] | None = None) -> int:
    """Run the app on `argv` (default sys.argv[1:]) and return the exit code; nothing escapes as a traceback
    (commands' errors are mapped by _MappedErrors; this catches what happens around them)."""
    stdout = _identity(1)
    try:
        code = app(args=list(argv) if argv is not None else None, prog_name="espzoo", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except SystemExit as err:
        # A closed pipe met by click (exit 1 on EPIPE) or by rich (help pages, tables: stdout pointed at /dev/null,
        # exit 1) is the reader leaving, not a failure.
        rich_left = stdout is not None and _identity(1) == _identity(os.devnull) != stdout
        if err.code == 1 and (rich_left or _reader_left()):
            _silence_stdout()
            return 0
        raise
    except EspzooError as err:
        return _error(str(err), err.exit_code)
    except typer.TyperException as err:  # bad usage: typer's own message and the usage line, exit 2
        show = getattr(err, "show", None)
        show() if show else sys.stderr.write(f"error: {err}\n")
        return err.exit_code
    except typer.Abort:  # end of input at a prompt
        sys.stderr.write("aborted\n")
        return 1
    except KeyboardInterrupt:  # typer turns one inside a command into exit 130 itself; this is for the rest
        sys.stderr.write("\ninterrupted\n")
        return INTERRUPTED
    except BrokenPipeError as err:  # `espzoo search ... | head`: the reader left, nothing to say
        if not _reader_left():
            return _error(f"internal error: {_first_line(err)}; details in {_write_crash_report()}", 1)
        _silence_stdout()
        return 0
    except Exception as err:  # noqa: BLE001 - a bug: one line here, the traceback in a file
        return _error(f"internal error: {_first_line(err)}; details in {_write_crash_report()}", 1)


def _reader_left() -> bool:
    """Whether stdout is a pipe whose reader has gone (`| head -1`, `| grep -q`): poll reports an error on it."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _silence_stdout() -> None:
    """Point stdout at /dev/null: what is still buffered is dropped at exit instead of failing there again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _identity(file: int | str) -> tuple[int, int] | None:
    """(device, inode) of an open descriptor or a path (os.stat takes either), None when it cannot be read."""
    try:
        stat = os.stat(file)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _error(message: str, code: int) -> int:
    sys.stderr.write(f"error: {message}\n")
    return code


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__


def _write_crash_report() -> Path:
    """The traceback of the exception being handled, in a file under $ESPZOO_HOME/crash (else the temp dir)."""
    import datetime
    import tempfile
    import traceback

    from espzoo.utils.home import espzoo_home

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    text = f"espzoo {__version__}\nargv: {sys.argv}\n\n{traceback.format_exc()}"
    for folder in (espzoo_home() / "crash", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"espzoo-crash-{stamp}-{os.getpid()}.txt"
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    return Path(os.devnull)


if __name__ == "__main__":
    main()
