"""Faults a test injects into the mirror (slow bytes, cut connections, refused ranges); never set by `mirror
serve`, and read by the handlers only through the server's `faults`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass
class Faults:
    """Failures to inject. `fail_first`: answer the first K requests with `fail_status`;
    `drop_after`: cut the connection after N body bytes, the first time each file is sent;
    `delay`: seconds to wait before answering; `rate`: bytes per second a body is sent at;
    `ignore_range`: answer every GET with the whole file (200), as a server without Range support does."""

    fail_first: int = 0
    fail_status: int = 500
    drop_after: int | None = None
    delay: float = 0.0
    rate: int | None = None
    ignore_range: int = 0

    @classmethod
    def from_json(cls, body: bytes) -> Faults:
        """The body of POST /_espzoo/faults: a JSON object of these fields; ValueError for anything else."""
        data = json.loads(body or b"{}")  # JSONDecodeError is a ValueError
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        faults = cls()
        for key, value in data.items():
            if key not in cls.__dataclass_fields__:
                raise ValueError(f"unknown fault {key!r}")
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"{key} must be a number")
            setattr(faults, key, value)
        return faults

    @classmethod
    def parse(cls, text: str | None) -> Faults:
        """'fail_first=2,drop_after=1000000,delay=0.5,rate=5000000' (the ESPZOO_MIRROR_FAULTS form)."""
        faults = cls()
        for item in filter(None, (p.strip() for p in (text or "").split(","))):
            key, _, value = item.partition("=")
            if key not in cls.__dataclass_fields__:
                raise ValueError(f"unknown mirror fault {key!r}; use fail_first, fail_status, drop_after, delay, rate, "
                                 "ignore_range.")
            setattr(faults, key, float(value) if key == "delay" else int(float(value)))
        return faults


_NO_FAULTS = Faults()
