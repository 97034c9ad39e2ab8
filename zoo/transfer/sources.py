"""Where pretrained tensors come from: a repo, a hub-layout folder, an experiment dir, a checkpoint file
or an adapter-only export (its base with the adapter's tensors on top).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from espzoo.errors import (
    AdapterError,
    TransferError,
)
from espzoo.models.build import model_token_list
from espzoo.repo import (
    ADAPTER_NAME,
    best_checkpoint,
    config_criteria,
    is_adapter_only,
    model_reference,
    parse_token_list,
)
from espzoo.transfer.vocab import Vocabulary, pretrained_vocabulary
from espzoo.utils.yaml_io import load_yaml


@dataclass
class Source:
    """A resolved spec source: a checkpoint and, where known, the config it was trained with."""

    name: str
    checkpoint: Path
    config: dict[str, Any] | None = None  # with absolute paths
    repo_id: str | None = None
    commit: str | None = None
    adapter: Path | None = None  # an adapter-only export (espzoo.lora): checkpoint is its base with its tensors

    @property
    def token_list(self) -> list[str] | None:
        return model_token_list(self.config) if self.config and self.config.get("token_list") else None

    def vocabulary(self) -> Vocabulary:
        if not self.config or not self.config.get("token_list"):
            raise TransferError(f"{self.name} has no config with a token list; a vocabulary change needs one.")
        return pretrained_vocabulary(
            _token_list_of(self.config), self.config.get("token_type", "bpe"), self.config.get("bpemodel")
        )


def open_source(text: str) -> Source:
    """A checkpoint file, an experiment dir (OUT or ESPnet's exp dir), a hub-layout folder, or a repo id."""
    ref = model_reference(text)
    if ref.kind == "checkpoint":
        config_path = ref.path.parent / "config.yaml"  # type: ignore[union-attr]
        config = _read_config(config_path, relative_to=config_path.parent) if config_path.is_file() else None
        return Source(text, ref.path, config)  # type: ignore[arg-type]
    if ref.kind == "experiment":
        config = _read_config(ref.path / "config.yaml", relative_to=ref.path)  # type: ignore[operator]
        return Source(text, _experiment_checkpoint(ref.path, config), config)  # type: ignore[arg-type]
    if ref.kind == "folder":
        return _bundle_source(text, ref.path)  # type: ignore[arg-type]
    if ref.kind == "repo":
        from espzoo.hub import download as hub_download

        snapshot = hub_download.pull(ref.repo_id, ref.revision)  # type: ignore[arg-type]
        source = _bundle_source(text, Path(snapshot.path))
        source.repo_id, source.commit = snapshot.repo_id, snapshot.commit
        return source
    raise TransferError(ref.problem)


def _bundle_source(text: str, path: Path) -> Source:
    from espzoo.models.bundle import open_bundle

    if is_adapter_only(path):  # a LoRA adapter-only export: its pinned base with the adapter's tensors
        pass

        return adapter_source(text, path)
    bundle = open_bundle(path)
    return Source(text, Path(bundle.checkpoint), bundle.resolved_config())


def _experiment_checkpoint(folder: Path, config: dict[str, Any]) -> Path:
    """The model of an experiment dir: espzoo's OUT/model.pth, else ESPnet's averaged, best or latest epoch model
    (repo.best_checkpoint, the rule every caller uses)."""
    found = best_checkpoint((p.name for p in folder.iterdir() if p.is_file()), criteria=config_criteria(config))
    if found is None:
        raise TransferError(f"{folder} holds config.yaml but no model (model.pth, *.ave.pth or N epoch.pth).")
    return folder / found


def _read_config(path: Path, *, relative_to: Path) -> dict[str, Any]:
    from espzoo.models.bundle import resolve_config_paths

    config = load_yaml(path.read_text(encoding="utf-8")) or {}
    if not isinstance(config, dict):
        raise TransferError(f"{path} is not an ESPnet training config (a YAML mapping).")
    return resolve_config_paths(config, relative_to)


def _token_list_of(config: dict[str, Any]) -> list[str]:
    tokens = config["token_list"]
    if isinstance(tokens, str):
        return parse_token_list(Path(tokens).read_text(encoding="utf-8"), tokens)
    return list(tokens)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A state dict, memory-mapped (`mmap=True`) and never unpickling anything but tensors (`weights_only=True`)."""
    return _load_checkpoint(path)[0]


def _load_checkpoint(path: Path) -> tuple[dict[str, Any], bool]:
    """(state dict, whether its storages are memory-mapped from the file: only then may their pages be released)."""
    from espzoo.errors import BundleError
    from espzoo.models.bundle import load_state_dict_mapped

    try:
        return load_state_dict_mapped(path)
    except BundleError:
        raise
    except Exception as err:  # noqa: BLE001 (a damaged file fails deep inside torch's unpickler in many ways)
        raise TransferError(f"Checkpoint {path} is not a readable PyTorch file ({err}); is it complete?") from err


def adapter_source(name: str, root: Path) -> Any:
    """An adapter-only export as a transfer source (espzoo.transfer.Source): its config, and a checkpoint that is
    the pinned base model with the adapter's full tensors on top (the adapted model without its adapters,
    written for this process), so the transfer plan sees the model the adapter was trained as. The adapter
    itself goes on in `continue_adapter`."""
    from espzoo.repo import meta_files
    pass

    root = Path(root)
    meta = load_yaml((root / "meta.yaml").read_text(encoding="utf-8")) if (root / "meta.yaml").is_file() else None
    named = meta_files(meta, str(root / "meta.yaml"))
    if not named.config or not (root / named.config).is_file():
        raise AdapterError(f"{root}/meta.yaml names no training config beside {ADAPTER_NAME}; re-export the adapter.")
    config = _read_config(root / named.config, relative_to=root)
    from espzoo.lora.files import materialized_base  # imports torch

    return Source(name, materialized_base(root), config, adapter=root)
