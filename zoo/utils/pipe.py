"""Messages on a pipe between espzoo and its own standby training child (espzoo.train.in_standby,
espzoo.train.asr_train): each is its length, then its pickle.

Pickle, because the calls carry espzoo's own values (a TransferPlan, a FinetuneRequest) and the errors come back
as the same classes. It is only ever read from a pipe that this process and its parent or child alone hold, never
from a file or a socket: no one else's bytes reach pickle.loads. Nothing heavy is imported here (the child reads
its messages before, and the parent without, importing ESPnet).
"""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any

_HEAD = struct.Struct("!Q")


def send(fd: int, message: Any) -> None:
    """Write `message` to `fd` (a message longer than the pipe's buffer waits for the reader)."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    data = _HEAD.pack(len(data)) + data
    while data:
        data = data[os.write(fd, data):]


def receive(fd: int) -> Any:
    """The next message from `fd`; None at EOF (the writer closed its end, or died)."""
    head = _read_exactly(fd, _HEAD.size)
    body = _read_exactly(fd, _HEAD.unpack(head)[0]) if head is not None else None
    if body is None:
        return None
    return pickle.loads(body)  # noqa: S301 (written by this process's own parent or child, see above)


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
