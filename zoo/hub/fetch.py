"""One large file fetched as parallel byte ranges into a preallocated partial file (what hf_transfer did).

    done = fetch.fetch(url, partial, size, headers=..., parts=4, timeout=30.0)

huggingface_hub reads a download through httpx in one stream; on loopback that runs at about 0.6 of curl
(bench/pull.py). Here each part has its own connection (the stdlib's http.client, whose `readinto` fills a buffer
in C) and writes with `os.pwrite` at its offset into a file preallocated to the full size, so no part waits
for another and a full disk fails before the first byte. Which bytes are written is kept in a small state file
beside the partial (`<partial>.parts`), saved as parts advance and always behind what was written, so a killed
process is resumed from it (espzoo.hub.cache on the next pull) and a connection cut mid-part retries from where that
part stopped. A server that answers the first Range request with anything but a 206 for exactly those bytes gets
nothing from here: `fetch` returns False and the caller downloads the normal way.
"""

from __future__ import annotations

import errno
import http.client
import json
import os
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from espzoo.errors import RangeError

PARTIAL_SUFFIX = ".parallel.incomplete"  # blobs/<etag>.parallel.incomplete: one name per blob, found again by resume
STATE_SUFFIX = ".parts"
# Bytes per read and pwrite (a cut loses at most this much). 64 KiB, as huggingface_hub's path here: with 1 MiB a
# pull in a fresh process ran 3x slower (2.7-3.4 s against 0.6-0.8 s for 524 MB, all of it kernel time), though
# later pulls in the same process were fast.
CHUNK = 1 << 16
SAVE_EVERY = 8 << 20  # bytes between two saves of the state file
MAX_REDIRECTS = 5
PARTS = 4  # parallel connections per file: on loopback more gained nothing (bench/pull.py)
READ_TIMEOUT = 30.0  # seconds any connect or read may wait


@dataclass
class Part:
    start: int
    end: int  # exclusive
    done: int  # the next byte to fetch: [start, done) is written

    @property
    def left(self) -> int:
        return self.end - self.done


def partial_path(blob: Path) -> Path:
    """The partial file of a parallel download of `blob` (blobs/<etag>: the etag stays the first dotted piece)."""
    return blob.with_name(blob.name + PARTIAL_SUFFIX)


def state_path(partial: Path) -> Path:
    return partial.with_name(partial.name + STATE_SUFFIX)


def is_resumable(partial: Path) -> bool:
    """Whether `partial` was left by a parallel download that recorded its progress."""
    return partial.name.endswith(PARTIAL_SUFFIX) and state_path(partial).is_file()


def written(partial: Path, size: int) -> int:
    """Bytes of a parallel download of a `size`-byte file already in `partial` (0 when it would start afresh)."""
    plan = _load_state(partial, size)
    return sum(p.done - p.start for p in plan) if plan else 0


def discard(partial: Path) -> None:
    """Remove a partial file and its state."""
    partial.unlink(missing_ok=True)
    state_path(partial).unlink(missing_ok=True)


def split(size: int, parts: int) -> list[Part]:
    """`parts` ranges of (nearly) equal size covering [0, size)."""
    parts = max(1, min(parts, size))
    bounds = [size * i // parts for i in range(parts + 1)]
    return [Part(a, b, a) for a, b in zip(bounds, bounds[1:], strict=False)]


def uses_proxy(url: str) -> bool:
    """Whether the environment routes `url` through a proxy (the plain client here speaks to the host directly)."""
    split_url = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    return split_url.scheme in proxies and not urllib.request.proxy_bypass(split_url.hostname or "")


def fetch(
    url: str, partial: Path, size: int, *, headers: dict[str, str], parts: int | None = None,
    timeout: float = READ_TIMEOUT, retries: int = 3, backoff: float = 0.5,
    on_bytes: Callable[[int], None] | None = None,
) -> bool:
    """Fill `partial` with the `size` bytes of `url`, resuming from its state file when there is one. True when it
    holds them all (its state file removed); False, with nothing written, when the server does not honour Range.
    A part that fails is retried from where it stopped (`retries` times in a row, with backoff); after that the
    failure is raised and the state kept, so a later call resumes. `on_bytes(n)` hears each piece written."""
    plan = _load_state(partial, size)
    fresh = plan is None
    if plan is None:
        plan = split(size, parts or PARTS)
    todo = [p for p in plan if p.left > 0]
    if not todo:
        state_path(partial).unlink(missing_ok=True)
        return True
    first = todo[0]
    conn, resp, final_url = _open(url, headers, first, timeout)
    if not _is_range_answer(resp, first, size):
        conn.close()
        if fresh:
            return False
        raise RangeError(f"the server stopped honouring Range requests (HTTP {resp.status})")
    progress = _Progress(partial, plan, on_bytes)
    # Redirects are followed once: the other parts ask the final URL (an LFS store's signed URL) directly.
    part_headers = _headers_for(final_url, url, headers)
    workers = [_Worker(p, final_url, part_headers, timeout, retries, backoff, progress) for p in todo]
    workers[0].conn, workers[0].resp = conn, resp
    threads = [threading.Thread(target=w.run, daemon=True) for w in workers[1:]]
    fd = -1
    try:
        # 0o666 less the umask: the mode huggingface_hub's own blobs get.
        fd = os.open(partial, os.O_RDWR | os.O_CREAT | (os.O_TRUNC if fresh else 0), 0o666)
        if fresh:
            _preallocate(fd, size)
        progress.save()
        for worker in workers:
            worker.fd = fd
        for thread in threads:
            thread.start()
        workers[0].run()
        for thread in threads:
            thread.join()
        failed = next((w.error for w in workers if w.error is not None), None)
        if failed is not None:
            raise failed
        progress.save()
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            _stop(workers, threads)
            discard(partial)  # a full disk: leave nothing half-written (the next pull starts over)
        raise
    finally:
        _stop(workers, threads)  # interrupted (Ctrl-C): the parts stop before their file is closed
        if fd >= 0:
            os.close(fd)
    if any(p.left for p in plan):
        raise RangeError("a part ended before its last byte")
    state_path(partial).unlink(missing_ok=True)
    return True


def _stop(workers: list[_Worker], threads: list[threading.Thread]) -> None:
    if any(t.is_alive() for t in threads):
        workers[0].progress.stop.set()
        for worker in workers:
            worker.abort()
        for thread in threads:
            thread.join()
    workers[0].close()  # its connection was opened before any thread ran


# ---------------------------------------------------------------------------------------------
# Connections


def _open(url: str, headers: dict[str, str], part: Part, timeout: float
          ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, str]:
    """GET part's missing bytes of `url` (following redirects): the connection, its response and the final URL."""
    for _ in range(MAX_REDIRECTS + 1):
        split_url = urllib.parse.urlsplit(url)
        cls = http.client.HTTPSConnection if split_url.scheme == "https" else http.client.HTTPConnection
        conn = cls(split_url.hostname or "", split_url.port, timeout=timeout)  # every connect and read has it
        try:
            conn.connect()
            # No SO_RCVBUF: a 4 MiB buffer measured the same as the kernel's autotuning (which it would switch off).
            target = (split_url.path or "/") + (f"?{split_url.query}" if split_url.query else "")
            conn.request("GET", target, headers={**headers, "Range": f"bytes={part.done}-{part.end - 1}",
                                                 "Accept-Encoding": "identity"})
            resp = conn.getresponse()
        except BaseException:
            conn.close()
            raise
        location = resp.getheader("Location")
        if resp.status in (301, 302, 303, 307, 308) and location:
            resp.read()
            conn.close()
            new_url = urllib.parse.urljoin(url, location)
            headers = _headers_for(new_url, url, headers)
            url = new_url
            continue
        return conn, resp, url
    raise RangeError(f"more than {MAX_REDIRECTS} redirects from {url}")


def _headers_for(new_url: str, old_url: str, headers: dict[str, str]) -> dict[str, str]:
    """The token goes to the host it was meant for only (as httpx does on a redirect to another origin)."""
    old, new = urllib.parse.urlsplit(old_url), urllib.parse.urlsplit(new_url)
    if (old.scheme, old.netloc) == (new.scheme, new.netloc):
        return headers
    return {k: v for k, v in headers.items() if k.lower() != "authorization"}


def _is_range_answer(resp: http.client.HTTPResponse, part: Part, size: int) -> bool:
    """A 206 for exactly [part.done, part.end) of a `size`-byte file."""
    return resp.status == 206 and resp.getheader("Content-Range", "").strip() == (
        f"bytes {part.done}-{part.end - 1}/{size}")


def _preallocate(fd: int, size: int) -> None:
    """Give the file its full length (sparse). posix_fallocate, which would reserve the blocks, made a single part
    write 2-3x slower on ext4 (bench: unwritten extents converted as they are filled); a full disk is reported by
    the pwrite that meets it instead, and the partial is then removed."""
    os.ftruncate(fd, size)


# ---------------------------------------------------------------------------------------------
# Progress and its state file


class _Progress:
    """Bytes written per part, shared by the workers; saved to the state file every SAVE_EVERY bytes."""

    def __init__(self, partial: Path, plan: list[Part], on_bytes: Callable[[int], None] | None):
        self.partial, self.plan, self.on_bytes = partial, plan, on_bytes
        self.lock = threading.Lock()
        self.unsaved = 0
        self.stop = threading.Event()  # set when a part gave up: the others stop at their next piece

    def add(self, n: int) -> None:
        with self.lock:
            if self.on_bytes is not None:
                self.on_bytes(n)
            self.unsaved += n
            if self.unsaved >= SAVE_EVERY:
                self._write()

    def save(self) -> None:
        with self.lock:
            self._write()

    def _write(self) -> None:
        """[start, end, done] of every part, atomically; `done` only ever trails what pwrite returned."""
        self.unsaved = 0
        state = state_path(self.partial)
        tmp = state.with_name(state.name + ".tmp")
        tmp.write_text(json.dumps({"size": self.plan[-1].end, "parts": [[p.start, p.end, p.done] for p in self.plan]}))
        os.replace(tmp, state)


def _load_state(partial: Path, size: int) -> list[Part] | None:
    """The parts recorded for `partial`, None when there is no usable record (then it starts over)."""
    if not partial.is_file() or partial.stat().st_size != size:
        return None
    try:
        state = json.loads(state_path(partial).read_text())
        plan = [Part(int(a), int(b), int(d)) for a, b, d in state["parts"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    joined = all(a.end == b.start for a, b in zip(plan, plan[1:], strict=False))
    covered = plan and state.get("size") == size and plan[0].start == 0 and plan[-1].end == size and joined and all(
        p.start <= p.done <= p.end for p in plan)
    return plan if covered else None


# ---------------------------------------------------------------------------------------------
# One part


class _Worker:
    def __init__(self, part: Part, url: str, headers: dict[str, str], timeout: float, retries: int,
                 backoff: float, progress: _Progress):
        self.part, self.fd, self.url, self.headers = part, -1, url, headers
        self.timeout, self.retries, self.backoff, self.progress = timeout, retries, backoff, progress
        self.conn: http.client.HTTPConnection | None = None
        self.resp: http.client.HTTPResponse | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        failures = 0
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        part = self.part
        try:
            while part.left > 0 and not self.progress.stop.is_set():
                try:
                    self._connect()
                    self._copy(view)
                except TRANSIENT as exc:
                    self.close()
                    failures += 1  # counted in a row: a part that moved on starts again from zero
                    if failures > self.retries or self.progress.stop.is_set():
                        raise exc
                    time.sleep(self.backoff * 2 ** (failures - 1))
                else:
                    failures = 0
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, which raises it
            self.error = exc
            self.progress.stop.set()
        finally:
            self.close()

    def _connect(self) -> None:
        if self.resp is not None:
            return
        self.conn, self.resp, _ = _open(self.url, self.headers, self.part, self.timeout)
        if not _is_range_answer(self.resp, self.part, self.progress.plan[-1].end):
            raise RangeError(f"HTTP {self.resp.status} ({self.resp.getheader('Content-Range')}) for bytes "
                             f"{self.part.done}-{self.part.end - 1}")

    def _copy(self, view: memoryview) -> None:
        part, resp = self.part, self.resp
        assert resp is not None
        while part.left > 0 and not self.progress.stop.is_set():
            n = resp.readinto(view[: min(CHUNK, part.left)])
            if not n:
                raise http.client.IncompleteRead(b"", part.left)
            written = 0
            while written < n:
                written += os.pwrite(self.fd, view[written:n], part.done + written)
            part.done += n
            self.progress.add(n)

    def abort(self) -> None:
        """Wake a read blocked in another thread (close alone does not)."""
        sock = self.conn.sock if self.conn is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = self.resp = None


# What a part retries: a timeout, a cut or refused-midway connection, an answer that is not the bytes asked for.
TRANSIENT: tuple[type[BaseException], ...] = (TimeoutError, ConnectionError, http.client.HTTPException)
