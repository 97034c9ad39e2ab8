"""ESPnet ASR models built by ESPnet itself from a training config dict.

ESPnet's `ASRTask.build_model` is the only code that gives every architecture on the Hub the exact parameter
names its checkpoints use, so espzoo never builds models any other way. `target_shapes` builds on PyTorch's
meta device: every parameter has its shape and no storage, so a 1 GB model's shapes cost no memory.
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from espzoo.s2t import config_task, espnet_task

Device = Literal["cpu", "meta"]


class ModelConfigError(ValueError):
    """A training config ESPnet cannot build a model from (the message says what to fix)."""


def training_args(config: dict[str, Any]) -> argparse.Namespace:
    """ESPnet's parsed training arguments for `config`: the parser's defaults, overlaid by the config's keys.

    This is what `asr_train.py --config config.yaml` does: the YAML's keys replace the parser's defaults
    (a `*_conf` dict replaces the default dict as a whole, it is not merged).
    """
    asr_task = espnet_task(config_task(config))  # ASR, or an S2T task for OWSM configs (espzoo.s2t)
    args = asr_task.get_parser().parse_args([])
    for key, value in config.items():
        setattr(args, key, copy.deepcopy(value))
    if args.token_list is None:
        raise ModelConfigError("The config has no token_list; give the model's token list (inline or a file path).")
    return args


def build_model(config: dict[str, Any], *, device: Device = "cpu") -> Any:
    """Build the ESPnet ASR model (`ESPnetASRModel` or a subclass) that `config` describes.

    With `device="meta"` the parameters have shapes but no storage (no memory, no initialization cost);
    with `device="cpu"` they carry ESPnet's own initialization (seed torch first for a repeatable one).
    """
    import torch

    asr_task = espnet_task(config_task(config))
    args = training_args(config)
    _check_stats_file(args)
    try:
        with torch.device(device):
            return asr_task.build_model(args)
    except (TypeError, KeyError, ValueError, AttributeError) as err:
        raise ModelConfigError(f"ESPnet cannot build a model from this config ({type(err).__name__}: {err}).") from err


@dataclass(frozen=True)
class TargetModel:
    """What a transfer needs to know of the model a config describes, without its memory."""

    shapes: dict[str, tuple[int, ...]]  # every state-dict tensor, in state-dict order
    parameters: frozenset[str]  # the keys that are parameters (the rest are buffers, which never train)
    token_list: list[str]  # as the built model uses it (see model_token_list)


def target_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor in the state dict of the model `config` describes (built on the meta device).

    A GlobalMVN stats file that does not exist yet (new stats, computed later by ESPnet's collect_stats) does not
    stop this: the normalization buffers then get the feature dimension the frontend produces.
    """
    return describe_target(config).shapes


def describe_target(config: dict[str, Any]) -> TargetModel:
    """Shapes, parameter names and token list of the model `config` describes, built on the meta device."""
    config = dict(config)
    missing_stats = _missing_stats_file(config)
    if missing_stats:
        config["normalize"] = None
        config["normalize_conf"] = {}
    model = build_model(config, device="meta")
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    if missing_stats:
        dims = model.frontend.output_size() if model.frontend is not None else config["input_size"]
        shapes = {"normalize.mean": (dims,), "normalize.std": (dims,), **shapes}
    parameters = frozenset(name for name, _ in model.named_parameters())
    return TargetModel(shapes=shapes, parameters=parameters, token_list=model_token_list(config))


def _missing_stats_file(config: dict[str, Any]) -> bool:
    if config.get("normalize") != "global_mvn":
        return False
    stats_file = (config.get("normalize_conf") or {}).get("stats_file")
    return stats_file is None or not Path(stats_file).is_file()


def _check_stats_file(args: argparse.Namespace) -> None:
    if getattr(args, "normalize", None) != "global_mvn":
        return
    stats_file = (args.normalize_conf or {}).get("stats_file")
    if stats_file is None or not Path(stats_file).is_file():
        raise ModelConfigError(
            f"The config's normalize_conf.stats_file {stats_file!r} does not exist; "
            "point it at the model's feats_stats.npz (a resolved config has absolute paths)."
        )


def model_token_list(config: dict[str, Any]) -> list[str]:
    """The token list the built model uses: the config's, plus the big-blank symbols ESPnet inserts for a
    multi-blank transducer (`<blankD>` before `<blank>`, unless already there, as `ASRTask.build_model` does)."""
    token_list = config.get("token_list")
    if isinstance(token_list, (str, Path)):
        token_list = Path(token_list).read_text(encoding="utf-8").splitlines()
        token_list = [line.rstrip() for line in token_list]
    tokens = list(token_list or [])
    model_conf = config.get("model_conf") or {}
    durations = model_conf.get("transducer_multi_blank_durations")
    if durations:
        blank_idx = tokens.index(model_conf.get("sym_blank", "<blank>"))
        for duration in durations:
            if f"<blank{duration}>" not in tokens:
                tokens.insert(blank_idx, f"<blank{duration}>")
    return tokens
