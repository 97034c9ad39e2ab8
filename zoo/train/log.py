"""Following ESPnet's training log: epoch results as they are written, and the epochs of a finished log.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from espzoo.train.options import EpochReport, _number

_RESULTS = re.compile(r"\b(\d+)epoch results: (.*)$")


_STARTED = re.compile(r"\b(\d+)/(\d+)epoch started")


_SECTION = re.compile(r"\[(\w+)\] ")


_VALUE = re.compile(r"(\w+)=(.*?)(?=, \w+=|$)")


_SAVED = ("The best model has been updated", "There are no improvements in this epoch")


def parse_results_line(line: str) -> tuple[int, dict[str, dict[str, Any]]] | None:
    """(epoch, {"train": {...}, "valid": {...}}) from ESPnet's `Nepoch results: [train] k=v, ... [valid] ...`."""
    match = _RESULTS.search(line.rstrip())
    if match is None:
        return None
    sections: dict[str, dict[str, Any]] = {}
    parts = _SECTION.split(match.group(2))
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        values: dict[str, Any] = {}
        for key, raw in _VALUE.findall(body.strip().rstrip(",")):
            number = _number(raw)
            values[key] = raw.strip() if number is None else number
        sections[name] = values
    return int(match.group(1)), sections


@dataclass
class _LogFollower:
    """Reads lines ESPnet appends to train.log and turns them into progress."""

    path: Path
    offset: int
    on_epoch: Callable[[EpochReport], None] | None
    started_at: float
    first_step_at: float | None = None
    first_epoch: int | None = None
    max_epoch: int = 0
    last_epoch: int = 0
    saving: bool = False  # between "epoch results" and the line that follows the checkpoint save
    history: list[EpochReport] = field(default_factory=list)
    _partial: str = ""

    def poll(self) -> bool:
        """Read what ESPnet appended; whether there was anything."""
        with self.path.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        if not chunk:
            return False
        self.offset += len(chunk)
        text = self._partial + chunk.decode("utf-8", errors="replace")
        *lines, self._partial = text.split("\n")
        for line in lines:
            self.feed(line)
        return True

    def feed(self, line: str) -> None:
        started = _STARTED.search(line)
        if started:
            epoch, self.max_epoch = int(started.group(1)), int(started.group(2))
            if self.first_step_at is None:
                self.first_step_at, self.first_epoch = time.monotonic(), epoch
            return
        results = parse_results_line(line)
        if results:
            epoch, sections = results
            self.saving, self.last_epoch = True, epoch
            elapsed = time.monotonic() - (self.first_step_at or self.started_at)
            done = epoch - (self.first_epoch or epoch) + 1
            eta = elapsed / done * max(0, self.max_epoch - epoch) if done > 0 else None
            report = EpochReport(
                epoch, self.max_epoch, sections.get("train", {}), sections.get("valid", {}), elapsed, eta
            )
            self.history.append(report)
            if self.on_epoch is not None:
                self.on_epoch(report)
            return
        if any(marker in line for marker in _SAVED):
            self.saving = False

    def tail(self, lines: int = 15) -> str:
        with self.path.open("rb") as f:
            f.seek(max(0, self.path.stat().st_size - 20000))
            return "\n".join(f.read().decode("utf-8", errors="replace").splitlines()[-lines:])


def iter_epochs(log: str | Path) -> Iterator[tuple[int, dict[str, dict[str, Any]]]]:
    """Every `Nepoch results` line of an ESPnet train.log, parsed."""
    for line in Path(log).read_text(encoding="utf-8", errors="replace").splitlines():
        parsed = parse_results_line(line)
        if parsed:
            yield parsed


