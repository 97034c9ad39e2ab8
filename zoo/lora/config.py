"""What an adapter is, torch-free: its config file (adapter_config.yaml) and the options that make one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from espzoo.errors import AdapterError
from espzoo.repo import ADAPTER_CONFIG_NAME
from espzoo.utils.fs import atomic_write
from espzoo.utils.yaml_io import load_yaml

ENV = "ESPZOO_LORA"  # path of the adapter_config.yaml the training process applies


CONFIG_NAME = ADAPTER_CONFIG_NAME  # the adapter-only layout lives in espzoo.repo


LORA_SUFFIXES = (".lora_A", ".lora_B")


DEFAULT_SCOPES = ("encoder", "decoder")


@dataclass(frozen=True)
class AdapterConfig:
    """What `adapter_config.yaml` holds: enough to rebuild the adapters on top of their base model."""

    rank: int
    alpha: float | None = None  # None: alpha = rank (scaling 1)
    dropout: float = 0.0
    targets: tuple[str, ...] = ()  # module patterns; () = every attention/feed-forward Linear of encoder/decoder
    train_also: tuple[str, ...] = ()  # modules or tensors that train fully beside the adapters
    base_repo: str | None = None  # the pretrained model, pinned
    base_commit: str | None = None
    # Tensors an adapter this one continues carried in full (not the base's): an adapter-only export keeps them.
    carried: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise AdapterError(f"--lora {self.rank} is not a rank; give a positive integer such as 8.")
        if self.alpha is not None and self.alpha <= 0:
            raise AdapterError(f"--lora-alpha {self.alpha} must be positive (the usual choice is the rank or 2x it).")
        if not 0.0 <= self.dropout < 1.0:
            raise AdapterError(f"--lora-dropout {self.dropout} must be in [0, 1).")

    @property
    def scaling(self) -> float:
        return (self.alpha if self.alpha is not None else self.rank) / self.rank

    def to_yaml(self) -> str:
        data = asdict(self)
        data["targets"], data["train_also"], data["carried"] = (
            list(self.targets), list(self.train_also), list(self.carried))
        data["alpha"] = self.alpha if self.alpha is not None else self.rank
        return yaml.safe_dump({"adapter": "lora", **data}, sort_keys=False)

    def write(self, path: Path) -> Path:
        atomic_write(Path(path), lambda tmp: tmp.write_text(self.to_yaml(), encoding="utf-8"))
        return Path(path)

    @classmethod
    def read(cls, path: str | Path) -> AdapterConfig:
        try:
            data = load_yaml(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as err:
            raise AdapterError(f"{path} is not a readable adapter config ({err}); re-export the adapter.") from err
        if not isinstance(data, dict) or data.get("adapter", "lora") != "lora" or "rank" not in data:
            raise AdapterError(f"{path} is not a LoRA adapter config (rank, alpha, targets); re-export the adapter.")
        return cls(
            rank=_field(path, data, "rank", int),
            alpha=_field(path, data, "alpha", float) if data.get("alpha") is not None else None,
            dropout=_field(path, data, "dropout", float) if data.get("dropout") is not None else 0.0,
            targets=_names(path, data, "targets"),
            train_also=_names(path, data, "train_also"),
            base_repo=_base(path, data, "base_repo", _REPO_ID, "ORG/NAME"),
            base_commit=_base(path, data, "base_commit", _COMMIT, "the 40-character commit id it was trained on"),
            carried=_names(path, data, "carried"),
        )


_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


_COMMIT = re.compile(r"[0-9a-f]{40}")


def _field(path: str | Path, data: dict[str, Any], key: str, kind: type) -> Any:
    """data[key] as an int or float; AdapterError naming the file and the value when it is something else."""
    value = data.get(key)
    exact = isinstance(value, int) and not isinstance(value, bool) if kind is int else (
        isinstance(value, (int, float)) and not isinstance(value, bool))
    if not exact:
        raise AdapterError(f"{path}: {key} is {value!r}, not a number; re-export the adapter (or fix {key}).")
    return kind(value)


def _names(path: str | Path, data: dict[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AdapterError(f"{path}: {key} must be a list of module names, not {value!r}; re-export the adapter.")
    return tuple(value)


def _base(path: str | Path, data: dict[str, Any], key: str, form: re.Pattern[str], wanted: str) -> str | None:
    """The base model's repo id or commit: absent, or exactly that (a branch name would leave the adapter
    unpinned, a path would lead out of the cache)."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not form.fullmatch(value) or ".." in value:
        raise AdapterError(f"{path}: {key} is {value!r}, not {wanted}; the adapter's base must be pinned, so "
                           "re-export the adapter from its experiment.")
    return value


@dataclass(frozen=True)
class LoraOptions:
    """What `espzoo finetune/plan --lora` take, as data (train_also None: the default, see `default_train_also`)."""

    rank: int
    alpha: float | None = None
    dropout: float = 0.0
    targets: tuple[str, ...] = ()
    train_also: tuple[str, ...] | None = None

    def config(self, train_also: Sequence[str], base_repo: str | None, base_commit: str | None) -> AdapterConfig:
        return AdapterConfig(self.rank, self.alpha, self.dropout, self.targets, tuple(train_also), base_repo,
                             base_commit)
