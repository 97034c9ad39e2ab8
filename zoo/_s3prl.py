"""s3prl upstreams built from their architecture, never downloaded (see espzoo._upstreams)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def offline_hub_patches(shapes: Mapping[str, tuple[int, ...]]) -> list[tuple[Any, str, Any]]:
    return []
