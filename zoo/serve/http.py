"""The HTTP plumbing every mirror route shares: a handler base that answers JSON and errors, reads request
bodies within limits, and knows the origin links are made from.
"""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from espzoo.errors import MirrorError
from espzoo.serve.faults import Faults
from espzoo.serve.sources import (
    _CHUNK,
    RepoFile,
    _within,
)

if TYPE_CHECKING:
    from espzoo.serve.server import MirrorServer, _Server


MAX_BODY = 64 * 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries Content-Length
    server: _Server
    takes_uploads = False  # the API origin's handler takes them; the LFS origin's does not
    _entry: dict[str, Any] | None = None

    def setup(self) -> None:
        # An idle keep-alive connection or a half-sent request is dropped after idle_timeout, freeing its worker.
        self.timeout = self.server.mirror.idle_timeout
        super().setup()

    @property
    def mirror(self) -> MirrorServer:
        return self.server.mirror

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        if self.mirror.verbose:
            super().log_message(format, *args)

    def send_response(self, code: int, message: str | None = None) -> None:
        entry = getattr(self, "_entry", None)
        if entry is not None:
            entry["status"] = code  # the logged entry learns how it was answered
        super().send_response(code, message)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_POST(self) -> None:
        self._entry = None
        parts = urllib.parse.urlsplit(self.path).path.strip("/").split("/")
        if parts[:1] != ["_espzoo"]:
            return self._upload("POST")
        if not self.mirror.test_hooks:
            self.close_connection = True  # the body is not read: do not parse it as the next request
            return self._send_error(MirrorError(405, None, "the mirror is read-only"), head=False)
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 <= length <= MAX_BODY:
                raise ValueError(f"a control body holds at most {MAX_BODY} bytes")
            body = self.rfile.read(length) if length else b""
            if parts[1:] == ["reset"]:
                self.mirror.reset()
            elif parts[1:] == ["faults"]:
                self.mirror.faults = Faults.from_json(body)
            else:
                raise MirrorError(404, None, "unknown control route")
        except MirrorError as exc:
            return self._send_error(exc, head=False)
        except ValueError as exc:
            return self._send_error(MirrorError(400, None, f"bad request body: {exc}"), head=False)
        self._send_json({"ok": True}, head=False)

    def do_PUT(self) -> None:
        self._upload("PUT")

    def _upload(self, method: str) -> None:
        """A write (POST/PUT): the API origin's upload routes (espzoo.serve's Uploads), refused anywhere else."""
        self._entry = {"method": method, "path": urllib.parse.urlsplit(self.path).path, "query": "", "range": None}
        self.mirror.record(self._entry)
        try:
            if self.mirror.uploads is None or not self.takes_uploads:
                raise MirrorError(405, None, "the mirror is read-only (`espzoo mirror serve --root DIR` takes uploads)")
            self.mirror.uploads.handle(self, method)
        except MirrorError as exc:
            self.close_connection = True  # the body may be unread: do not parse it as the next request
            self._send_error(exc, head=False)
        except (ConnectionError, TimeoutError) as exc:  # the client left or stalled: nobody to answer
            self.close_connection = True
            self.server.log_dropped(self.client_address, exc)
        except (OSError, ValueError) as exc:  # what the disk refused (a name too long, a file over a folder, NUL)
            self.close_connection = True
            self._send_error(_storage_error(exc), head=False)

    def _dispatch(self, head: bool) -> None:
        split = urllib.parse.urlsplit(self.path)
        self._entry = None
        if split.path.startswith("/_espzoo/") and self.mirror.test_hooks:
            if split.path == "/_espzoo/stats":
                return self._send_json(self.mirror.stats.to_json(), head=head)
            return self._send_error(MirrorError(404, None, "unknown control route"), head=head)
        self._entry = {
            "method": self.command, "path": split.path, "query": split.query, "range": self.headers.get("Range"),
        }
        try:
            count = self.mirror.record(self._entry)
            faults = self.mirror.active_faults
            if faults.delay:
                time.sleep(faults.delay)
            if self.mirror.should_fail(count):
                raise MirrorError(faults.fail_status, None, f"injected failure {count} of {faults.fail_first}")
            # Split the raw path first, unquote each piece after: a revision arrives as refs%2Fpr%2F1.
            pieces = [urllib.parse.unquote(p) for p in split.path.split("/")[1:]]
            query = dict(urllib.parse.parse_qsl(split.query))
            self.route(pieces, query, head)
        except MirrorError as exc:
            self._send_error(exc, head=head)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def route(self, pieces: list[str], query: dict[str, str], head: bool) -> None:
        raise NotImplementedError

    def token(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        return auth[7:].strip() or None if auth.lower().startswith("bearer ") else None

    # -- responses -----------------------------------------------------------------------------

    def _send_json(self, data: Any, *, head: bool, status: int = 200, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _send_error(self, exc: MirrorError, *, head: bool) -> None:
        headers = {"X-Error-Message": exc.message}
        if exc.code:
            headers["X-Error-Code"] = exc.code
        if exc.commit:
            headers["X-Repo-Commit"] = exc.commit
        self._send_json({"error": exc.message}, head=head, status=exc.status, headers=headers)

    def _send_file(self, file: RepoFile, *, head: bool, headers: dict[str, str]) -> None:
        """The file's bytes (or the Range asked for) with Content-Length, honouring the injected faults."""
        if not _within(file.local, self.mirror.source.real_root):  # replaced by a link leading out since listed
            raise MirrorError(404, "EntryNotFound", f"{file.path} is not served")
        start, end = 0, file.size - 1
        status = 200
        wanted = self.headers.get("Range")
        if wanted and not self.mirror.active_faults.ignore_range:
            parsed = _parse_range(wanted, file.size)
            if parsed is None:
                raise MirrorError(416, None, f"range {wanted} is outside 0-{file.size - 1}")
            start, end = parsed
            status = 206
        length = max(end - start + 1, 0)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{file.size}")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if head or length == 0:
            return
        drop = self.mirror.drop_point(file.etag)
        rate = self.mirror.active_faults.rate
        with open(file.local, "rb") as f:
            if drop is None and not rate:
                self.wfile.flush()
                self.connection.sendfile(f, start, length)  # zero-copy: the bench compares with curl
                return
            f.seek(start)
            left = length if drop is None else min(length, drop)
            began = time.monotonic()
            sent = 0
            while left > 0:
                chunk = f.read(min(left, 64 * 1024))
                if not chunk:
                    break
                self.wfile.write(chunk)
                sent += len(chunk)
                left -= len(chunk)
                if rate:
                    ahead = sent / rate - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)
        if drop is not None and drop < length:
            # Cut the connection mid-body, as a flaky network would.
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """'bytes=a-b' / 'bytes=a-' / 'bytes=-n' -> (start, end) inclusive; None when unsatisfiable."""
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not m or not (m.group(1) or m.group(2)):
        return None
    if not m.group(1):  # suffix range: the last n bytes
        n = int(m.group(2))
        return (max(size - n, 0), size - 1) if n > 0 and size > 0 else None
    start = int(m.group(1))
    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    if start >= size or end < start:
        return None
    return start, end


def _origin(handler: _Handler) -> str:
    """This API server as the client reaches it (its Host header), for the links it is handed."""
    host = (handler.headers.get("Host") or "").strip()
    return f"http://{host}" if host else handler.mirror.url


def _body_chunks(handler: _Handler, limit: int) -> Iterator[bytes]:
    """The request body (Content-Length or chunked), in pieces; a body longer than `limit` is refused."""
    sent = 0
    if "chunked" in (handler.headers.get("Transfer-Encoding") or "").lower():
        while True:
            size_line = handler.rfile.readline(1024)
            try:
                size = int(size_line.split(b";")[0].strip() or b"x", 16)
            except ValueError as exc:
                raise MirrorError(400, None, "a malformed chunked body") from exc
            if size == 0:
                while handler.rfile.readline(1024).strip():  # trailers, then the blank line
                    pass
                return
            sent += size
            if sent > limit:
                raise MirrorError(413, None, f"the body is longer than the {limit} bytes announced")
            left = size
            while left:
                chunk = handler.rfile.read(min(left, _CHUNK))
                if not chunk:
                    raise MirrorError(400, None, "the body ended early")
                left -= len(chunk)
                yield chunk
            handler.rfile.readline(16)  # the CRLF after each chunk
    length = int(handler.headers.get("Content-Length") or 0)
    if length > limit:
        raise MirrorError(413, None, f"the body is longer than the {limit} bytes allowed")
    while sent < length:
        chunk = handler.rfile.read(min(length - sent, _CHUNK))
        if not chunk:
            raise MirrorError(400, None, "the body ended early")
        sent += len(chunk)
        yield chunk


def _read_body(handler: _Handler, limit: int) -> bytes:
    return b"".join(_body_chunks(handler, limit))


def _read_json_body(handler: _Handler) -> dict[str, Any]:
    try:
        data = json.loads(_read_body(handler, MAX_BODY) or b"{}")
    except ValueError as exc:
        raise MirrorError(400, None, f"the body is not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise MirrorError(400, None, "the body is not a JSON object")
    return data


def _body_lines(handler: _Handler) -> Iterator[bytes]:
    """The ndjson lines of a commit body, each at most MAX_LINE bytes, without reading the whole body at once."""
    pending = b""
    for chunk in _body_chunks(handler, 1 << 40):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        if len(pending) > MAX_LINE:
            raise MirrorError(413, None, f"a commit line is longer than {MAX_LINE} bytes")
        yield from (line for line in lines if line.strip())
    if pending.strip():
        yield pending


MAX_LINE = 64 * 1024 * 1024  # one ndjson line of a commit (a regular file, base64) holds at most this much


def _storage_error(exc: OSError | ValueError) -> MirrorError:
    """What an upload the file system refused is answered: one sentence, 507 for a full disk, else 400."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return MirrorError(507, None, "the mirror's disk is full; free space on the server and upload again")
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return MirrorError(400, None, f"the mirror cannot store this upload ({reason}); use shorter file names without "
                                  "control characters, and no file where the repo has a folder")
