"""OUT as a training run holds it: one run at a time (a lock), what a killed run left set aside, and a full
disk said in one sentence.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from espzoo.errors import OutInUseError, TrainDiskFullError, TrainError
from espzoo.train.options import (
    TrainOptions,
    _complete_zip,
    node_rank,
)

LOCK_NAME = ".espzoo.lock"


NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@contextlib.contextmanager
def lock_out(out: str | Path, options: TrainOptions | None = None) -> Iterator[None]:
    """Hold an exclusive lock on OUT (OUT/.espzoo.lock, flock) for the block; the first thing a run does, before it
    writes anything, so a second run on the same OUT is refused and touches nothing.

    Nodes other than rank 0 of a multi-node run share rank 0's OUT and do not lock it. The lock file is handed to
    the training child too, so the lock lasts until ESPnet is gone, not only this process."""
    out = Path(out).expanduser().resolve()
    key = str(out)
    if key in _held_locks or node_rank(options or TrainOptions()) != 0:
        yield
        return
    if out.exists() and not out.is_dir():
        raise TrainError(f"{out} is a file, not a folder; choose another out dir.")
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        who = f" (pid {holder})" if holder.isdigit() else ""
        raise OutInUseError(
            f"{out} is in use by another espzoo run{who}; wait for it to finish, or choose another out dir."
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held_locks[key] = fd
    try:
        yield
    finally:
        del _held_locks[key]
        os.close(fd)


def check_out_dir(out: str | Path, options: TrainOptions) -> None:
    """Refuse an OUT that this run must not write into (a finished model, an unfinished training without resume,
    a cut-off checkpoint.pth); cheap, so callers run it under the lock before writing data or checkpoints."""
    out = Path(out).expanduser().resolve()
    if options.resume and (out / "conf" / "train.yaml").is_file():
        return  # what a resume finds cut off is set aside by _set_aside_incomplete
    if (out / "model.pth").exists():
        raise TrainError(
            f"{out} already holds a trained model (model.pth); pass resume=True (--resume) to train it for more "
            "epochs, or choose another out dir."
        )
    if (out / "espnet" / "checkpoint.pth").exists() or (out / "conf" / "train.yaml").exists():
        raise TrainError(
            f"{out} holds an unfinished training; pass resume=True (--resume) to continue it, "
            "or choose another out dir."
        )


def _set_aside_incomplete(espnet_dir: Path) -> list[str]:
    """What a killed or disk-full training left cut off, set aside so that --resume can go on (the notes say what).

    A cut-off checkpoint.pth holds no usable training state: the whole run moves to espnet.incomplete-N and
    training restarts from epoch 1 (the init checkpoint and config are kept). A cut-off Nepoch.pth is renamed
    to *.incomplete: ESPnet's averaging then leaves it out (espzoo.train.asr_train skips epochs without a file)."""
    checkpoint = espnet_dir / "checkpoint.pth"
    if checkpoint.exists() and not _complete_zip(checkpoint):
        with open(checkpoint, "rb") as f:
            head = f.read(4)
        if head and not head.startswith(b"PK"):  # no zip at all (a cut-off one starts as one): not ESPnet's
            kind = "a legacy-format pickle" if head[:1] == b"\x80" else "no zip file"
            raise TrainError(
                f"{checkpoint} is {kind}, not the zip file torch and ESPnet write, so it was neither loaded nor "
                "set aside as cut off; if you did not put it there, others can write to this out dir: start afresh "
                "in a new one you alone can write to."
            )
        n = 1
        while espnet_dir.with_name(f"{espnet_dir.name}.incomplete-{n}").exists():
            n += 1
        aside = espnet_dir.rename(espnet_dir.with_name(f"{espnet_dir.name}.incomplete-{n}"))
        return [f"{checkpoint} was cut off while being written (the training was killed, or the disk was full), "
                f"so training restarts from epoch 1; the cut-off run is kept in {aside}."]
    notes = []
    for path in sorted(espnet_dir.glob("*epoch.pth")):
        if path.name[0].isdigit() and not path.is_symlink() and not _complete_zip(path):
            path.rename(path.with_name(path.name + ".incomplete"))
            notes.append(
                f"{path} was cut off while being written (a full disk?); it is left out of the averaged model "
                f"(kept as {path.name}.incomplete)."
            )
    return notes


@contextlib.contextmanager
def disk_full_is_one_sentence(out: Path) -> Iterator[None]:
    try:
        yield
    except OSError as err:
        if err.errno not in NO_SPACE:
            raise
        where = err.filename or out
        raise TrainDiskFullError(
            f"no room to write {where} ({os.strerror(err.errno)}); free space (or raise the file size limit) and "
            "run the same command again with --resume."
        ) from None


def _file_size_limited() -> bool:
    import resource

    return resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY


_held_locks: dict[str, int] = {}  # OUT -> the open lock file, while this process holds it (the lock is re-entrant)
