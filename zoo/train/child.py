"""The training process: started in its own process group with a lifeline pipe, kept on standby with ESPnet
imported (warm_start), supervised (stall, Ctrl-C, a lost peer) and stopped with escalation.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from espzoo.errors import TrainError, TrainInterrupted
from espzoo.train.log import _LogFollower
from espzoo.train.outdir import _held_locks
from espzoo.utils import pipe as _pipe

STOP_GRACE_S = 30.0  # after SIGINT, how long ESPnet gets to exit before SIGTERM, then SIGKILL


PARENT_FD_ENV = "ESPZOO_PARENT_FD"  # the child's end of the lifeline pipe (see _start_child)


STANDBY = "--espzoo-standby"  # espzoo.train.asr_train imports ESPnet, then waits for its arguments (see warm_start)


GO_FD_ENV = "ESPZOO_GO_FD"  # the standby child's end of the pipe its calls and arguments come by


REPLY_FD_ENV = "ESPZOO_REPLY_FD"  # the standby child's end of the pipe its answers to calls go back by


SAVE_WAIT_S = 120.0  # how long a stop waits for a checkpoint being written to be complete


POLL_S = 0.2


def _child_command(module: str, args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _popen_kwargs(log_file: Any) -> dict[str, Any]:
    from espzoo.models.espnet_env import espnet_env

    env = espnet_env()
    env.setdefault("PYTHONUNBUFFERED", "1")
    # A new session: the terminal's Ctrl-C reaches only us, and we stop ESPnet at a safe moment.
    return {"stdout": log_file, "stderr": subprocess.STDOUT, "env": env, "start_new_session": True}


def _start_child(args: list[str], log_file: Any) -> subprocess.Popen:
    """`python -m espzoo.train.asr_train ARGS` (ESPnet's asr_train after espzoo's checks), tied to this process's life;
    the one warm_start started for the same output dir when there is one (it has imported ESPnet already).

    The child gets the read end of a pipe whose write end only this process holds: when this process dies, even
    by SIGKILL, the child reads EOF and kills its process group (ESPnet and its workers), so no trainer is left
    running unseen, writing into OUT. It also inherits OUT's lock, which therefore lasts as long as it does."""
    output_dir = args[args.index("--output_dir") + 1] if "--output_dir" in args else None
    waiting = _standby.pop(output_dir, None) if output_dir else None
    if waiting is not None and _go(waiting, args, Path(log_file.name)):
        return waiting
    return _spawn(args, log_file)


def _spawn(args: list[str], stdout: Any, *, standby: bool = False) -> subprocess.Popen:
    read, write = os.pipe()
    go_read, go_write = os.pipe() if standby else (-1, -1)
    reply_read, reply_write = os.pipe() if standby else (-1, -1)
    kwargs = _popen_kwargs(stdout)
    kwargs["env"][PARENT_FD_ENV] = str(read)
    if standby:
        kwargs["env"][GO_FD_ENV] = str(go_read)
        kwargs["env"][REPLY_FD_ENV] = str(reply_write)
    try:
        proc = subprocess.Popen(
            _child_command("espzoo.train.asr_train", args),
            pass_fds=(read, *((go_read, reply_write) if standby else ()), *_held_locks.values()),
            **kwargs,
        )
    except BaseException:
        for fd in (write, go_write, reply_read):
            if fd >= 0:
                os.close(fd)
        raise
    finally:
        for fd in (read, go_read, reply_write):  # the child's ends: a reply pipe then reads EOF once the child dies
            if fd >= 0:
                os.close(fd)
    proc.lifeline = write  # type: ignore[attr-defined]  # closed by _supervise once the child is gone
    proc.go = go_write  # type: ignore[attr-defined]  # a standby child's calls and arguments go here (_ask, _go)
    proc.reply = reply_read  # type: ignore[attr-defined]  # and its answers to calls come back here (_ask)
    proc.early = stdout if standby else None  # type: ignore[attr-defined]  # what it printed before it had a log
    return proc


@contextlib.contextmanager
def warm_start(out: str | Path) -> Iterator[None]:
    """Start OUT's training child now, so that it imports ESPnet (about 8 s on an idle core, far more on a busy
    machine) while this process checks the data, plans the transfer and writes the config, instead of after;
    run() then sends it its arguments. Hold OUT's lock first (the child inherits it, as every training child
    does). A child the block did not use (an error, a dry run, Ctrl-C) is stopped when it ends."""
    import tempfile

    output_dir = str(Path(out).expanduser().resolve() / "espnet")
    if output_dir in _standby:  # finetune() started it; run() inside it uses the same one
        yield
        return
    early = tempfile.TemporaryFile()  # unlinked: nothing is written into OUT before run() gets that far
    try:
        # The output dir on its command line only says, in `ps`, whose trainer it is: the arguments come by pipe.
        _standby[output_dir] = _spawn([STANDBY, "--output_dir", output_dir], early, standby=True)
    except BaseException:
        early.close()
        raise
    try:
        yield
    finally:
        unused = _standby.pop(output_dir, None)
        if unused is not None:
            _discard(unused)


def in_standby(out: str | Path, function: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """`function(*args, **kwargs)`, run in OUT's standby training child (see warm_start) when there is one: it has
    imported ESPnet (or is importing it), so espzoo.train.recipe plans and applies the transfer there and this process
    never imports ESPnet itself. An EspzooError or OSError raised there is raised here as it is (the same class and
    sentence; a full disk is then one sentence here too).
    In this process when there is no such child, or it died, or it failed otherwise (a bug: here it fails the same
    way, with its traceback). `function` must be importable by name; arguments and result travel pickled between
    this process and its own child, never from anywhere else."""
    proc = _standby.get(str(Path(out).expanduser().resolve() / "espnet"))
    answer = _ask(proc, (function, args, kwargs)) if proc is not None else None
    if answer is not None and answer[0] == "ok":
        return answer[1]
    if answer is not None and answer[0] == "error":
        raise answer[1]
    return function(*args, **kwargs)


def _ask(proc: subprocess.Popen, call: tuple[Any, ...]) -> tuple[str, Any] | None:
    """Send a standby child one call and read its answer: ("ok", value), ("error", EspzooError) or ("bug", why);
    None if the child is gone (then it is stopped and forgotten: training starts a fresh one)."""
    try:
        _send(proc, ("call", call))
        answer = _pipe.receive(proc.reply)  # type: ignore[attr-defined]
    except OSError:  # it died (out of memory, say)
        answer = None
    except Exception as err:  # noqa: BLE001 - the call or the answer does not pickle: both ends are still in step
        return "bug", repr(err)
    except BaseException:  # Ctrl-C while it works: a half-sent call or a half-read answer leaves it unusable
        _forget(proc)
        raise
    if answer is None:
        _forget(proc)
    return answer


def _forget(proc: subprocess.Popen) -> None:
    for key, waiting in list(_standby.items()):
        if waiting is proc:
            del _standby[key]
    _discard(proc)


def _send(proc: subprocess.Popen, message: Any) -> None:
    if proc.poll() is not None:
        raise BrokenPipeError
    _pipe.send(proc.go, message)  # type: ignore[attr-defined]


def _go(proc: subprocess.Popen, args: list[str], log: Path) -> bool:
    """Send a standby child its arguments and log; False (and the child stopped) if it is no longer there."""
    try:
        _send(proc, ("train", {"argv": args, "log": str(log)}))
    except OSError:  # it died (its imports failed, say): a child started afresh says why in the log
        _discard(proc)
        return False
    except BaseException:  # Ctrl-C while a long message waits: no longer in _standby, so warm_start won't stop it
        _discard(proc)
        raise
    for name in ("go", "reply"):  # EOF on its pipe: no more calls
        os.close(getattr(proc, name))
        setattr(proc, name, -1)
    return True


def _discard(proc: subprocess.Popen) -> None:
    """Stop a standby child that will not train (it has only imported): at once, with its process group."""
    for name in ("go", "reply", "lifeline"):
        fd = getattr(proc, name, -1)
        if fd is not None and fd >= 0:
            os.close(fd)
            setattr(proc, name, None if name == "lifeline" else -1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if getattr(proc, "early", None) is not None:
        proc.early.close()  # type: ignore[attr-defined]


def _keep_early_output(proc: subprocess.Popen, log: Path) -> None:
    """What a standby child printed before it had its log (it empties that file once it has copied it there):
    left over only when it died first (a broken ESPnet install, say), then it belongs in the log for the error."""
    early = getattr(proc, "early", None)
    if early is None:
        return
    early.seek(0)
    text = early.read()
    early.close()
    proc.early = None  # type: ignore[attr-defined]
    if text:
        with log.open("ab") as f:
            f.write(text)


class _Stop(Exception):
    pass


def _supervise(proc: subprocess.Popen, follower: _LogFollower | None, stall_s: float | None = None) -> int:
    """Wait for the child, feeding the log follower; on Ctrl-C/SIGTERM stop it cleanly and raise. A child whose
    log stays silent for stall_s is stopped as stalled: no fixed limit on how long training may take."""
    previous = None
    if _in_main_thread():

        def _on_term(signum: int, frame: Any) -> None:
            raise _Stop()

        previous = signal.signal(signal.SIGTERM, _on_term)
    try:
        heard = time.monotonic()
        while proc.poll() is None:
            if follower is not None and follower.poll():
                heard = time.monotonic()
            if stall_s is not None and time.monotonic() - heard > stall_s:
                epoch = _stop(proc, follower)
                log = follower.path if follower is not None else "its log"
                raise TrainError(
                    f"ESPnet wrote nothing to {log} for {_duration(stall_s)} and looks stalled, so it was "
                    f"stopped{f' after epoch {epoch}' if epoch else ''}; continue with --resume (raise "
                    "--stall-minutes if its steps are really that slow)."
                )
            time.sleep(POLL_S)
        return proc.returncode
    except (KeyboardInterrupt, _Stop):
        epoch = _stop(proc, follower)
        done = f" after epoch {epoch}" if epoch else " before the first epoch finished"
        raise TrainInterrupted(
            f"Training stopped{done}; continue it with resume=True (--resume) and the same out dir."
        ) from None
    except BaseException:
        _stop(proc, follower)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        lifeline = getattr(proc, "lifeline", None)
        if lifeline is not None and proc.poll() is not None:
            os.close(lifeline)
            proc.lifeline = None  # type: ignore[attr-defined]


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} minutes" if seconds >= 120 else f"{seconds:.0f} seconds"


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _stop(proc: subprocess.Popen, follower: _LogFollower | None) -> int:
    """Stop the child's process group, never while it writes checkpoint.pth. Returns the last finished epoch."""
    deadline = time.monotonic() + SAVE_WAIT_S
    while follower is not None and proc.poll() is None and time.monotonic() < deadline:
        follower.poll()
        if not follower.saving:
            break
        time.sleep(POLL_S)
    # The whole group: DataLoader workers and DDP processes must not outlive the stop (even if the main one exits).
    for sig, grace in ((signal.SIGINT, STOP_GRACE_S), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        if not _group_alive(proc):
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while _group_alive(proc) and time.monotonic() < deadline:
            time.sleep(0.05)
    if follower is not None:
        follower.poll()
        return follower.last_epoch
    return 0


def _group_alive(proc: subprocess.Popen) -> bool:
    proc.poll()  # reap the leader, or it counts as alive (a zombie)
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_standby: dict[str, subprocess.Popen] = {}  # ESPnet's output dir -> its training child, started early and waiting
