"""Pretrained models for the model/transfer tests: built by ESPnet from tests/configs/*.yaml, saved as
experiment dirs (config.yaml with paths relative to the folder, model.pth, feats_stats.npz), as espzoo's
trainer writes them. Weights are ESPnet's seeded initialization: real parameter names and shapes, no training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

CONFIGS = Path(__file__).resolve().parent / "configs"
ARCHITECTURES = ("conformer", "transformer", "e_branchformer", "rnn", "transducer")
EN_CHARS = ["<blank>", "<unk>", "<space>", *"etaoinshrdlucmwfgypbvkxjqz'", "<sos/eos>"]


def write_stats(path: Path, dims: int = 20, seed: int = 0) -> Path:
    """feats_stats.npz as ESPnet's collect_stats writes it (count, sum, sum_square)."""
    rng = np.random.default_rng(seed)
    count = 500
    mean = rng.normal(-4.0, 1.0, dims)
    var = rng.uniform(1.0, 4.0, dims)
    np.savez(path, count=np.array(count), sum=mean * count, sum_square=(var + mean**2) * count)
    return path


def config_for(name: str, folder: Path, tokens: list[str] | None = None, **overrides: Any) -> dict[str, Any]:
    """tests/configs/NAME.yaml with a token list and a stats file in `folder` (absolute paths)."""
    config = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    stats = folder / "feats_stats.npz"
    if not stats.exists():
        write_stats(stats)
    config.update(token_list=list(tokens or EN_CHARS), token_type="char", bpemodel=None)
    config["normalize_conf"] = {"stats_file": str(stats)}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def make_experiment(
    folder: Path, name: str, *, seed: int = 1, tokens: list[str] | None = None, **overrides: Any
) -> Path:
    """An experiment dir holding an ESPnet-built model of architecture `name`; returns the folder."""
    import torch
    from espzoo.model import build_model

    config = config_for(name, folder, tokens, **overrides)
    torch.manual_seed(seed)
    model = build_model(config)
    torch.save(model.state_dict(), folder / "model.pth")
    on_disk = dict(config, normalize_conf={"stats_file": "feats_stats.npz"})  # relative, as in OUT/config.yaml
    (folder / "config.yaml").write_text(yaml.safe_dump(on_disk, allow_unicode=True, sort_keys=False))
    return folder


def espnet_model(config: dict[str, Any], seed: int) -> Any:
    """The target model as ESPnet builds it, with a seeded initialization."""
    import torch
    from espzoo.model import build_model

    torch.manual_seed(seed)
    return build_model(config).eval()
