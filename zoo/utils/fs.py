"""Writing files and folders so that they appear complete or not at all.

Every output a later run trusts (checkpoints, configs, Kaldi dirs, reports, lock files) is written under a
temporary name beside its destination and renamed into place when complete: a crash, Ctrl-C or full disk
leaves the old version or nothing, never half a file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    public_mode(tmp)  # mkstemp makes it 0600; the finished file is an ordinary one
    try:
        write(tmp)
        os.replace(tmp, path)
    except RuntimeError as err:  # torch.save reports a failed write as RuntimeError ("unexpected pos ...")
        code = no_room(tmp)
        if code is None:
            raise
        raise OSError(code, os.strerror(code), str(path)) from err
    finally:
        tmp.unlink(missing_ok=True)
    return path


def no_room(path: Path, *, slack: int = 1 << 20) -> int | None:
    """ENOSPC when the file system of `path` has (almost) no space left, EFBIG when `path` reached the file size
    limit (ulimit -f); None otherwise. For writers that report a failed write without its errno."""
    import errno
    import resource

    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    try:
        size = path.stat().st_size if path.is_file() else 0
        free = shutil.disk_usage(path if path.is_dir() else path.parent).free
    except OSError:
        return None
    if soft != resource.RLIM_INFINITY and size + slack >= soft:
        return errno.EFBIG
    return errno.ENOSPC if free < slack else None


def umask() -> int:
    """This process's umask, read without changing it (os.umask can only set it, racing other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def public_mode(path: Path, *, directory: bool = False) -> None:
    """Give `path` the mode a plain open()/mkdir() would have (0666/0777 less the umask)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~umask())


def write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


class NotUtf8(ValueError):
    """A text file that is not UTF-8: the line and the value of its first bad byte (callers word the error)."""

    def __init__(self, path: Path, line: int, byte: int) -> None:
        super().__init__(f"{path} is not UTF-8 text (byte 0x{byte:02x} on line {line})")
        self.path, self.line, self.byte = path, line, byte


def read_utf8(path: Path) -> str:
    """A text file's contents, a byte-order mark dropped; NotUtf8 saying where when it is not UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise NotUtf8(path, data.count(b"\n", 0, err.start) + 1, data[err.start]) from None


def copy_file(source: Path, dest: Path) -> Path:
    return atomic_write(dest, lambda tmp: shutil.copyfile(source, tmp))


def replace_dir(tmp: Path, dest: Path) -> Path:
    """Move the finished folder `tmp` to `dest`; an existing `dest` is swapped out only once `tmp` is in place
    (an empty one is simply removed)."""
    if dest.is_dir() and not any(dest.iterdir()):
        dest.rmdir()
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old.{os.getpid()}.{tmp.name}")
        dest.rename(old)
        tmp.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(dest)
    return dest
