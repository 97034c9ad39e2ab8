"""Layer-wise learning rates in ESPnet's training process (`--lr-decay`, espzoo.train.schedule): an ESPnet task whose
models carry ESPnet's `_optim` attribute on each parameter that learns at another rate, so that ESPnet's own
configure_optimizer (espnet2/optimizers/optim_groups.py, with `exclude_weight_decay: true`) puts them in
parameter groups of their own. Nothing of ESPnet's trainer is replaced.

The classes are made on first use and found by name (`espzoo.train.lr_groups.LrGrouped<Task>`), so DDP's spawned
workers unpickle them too; the factors come from $ESPZOO_LR_GROUPS (OUT/init/lr_groups.json), which they inherit.
"""

from __future__ import annotations

import json
import os
from typing import Any

from espzoo.models.espnet_env import DerivedTasks

ENV = "ESPZOO_LR_GROUPS"


def grouped_task(base_task: type) -> type:
    """ESPnet task `base_task` whose built models carry the learning-rate factors of $ESPZOO_LR_GROUPS."""
    grouped = _GROUPED.of(base_task)
    if grouped is None:
        raise AttributeError(f"no layer-wise learning rates for {base_task.__module__}.{base_task.__name__}")
    return grouped


def mark(model: Any, scales: dict[str, float], lr: float) -> int:
    """Set ESPnet's `_optim = {"lr": lr * factor}` on each parameter of `model` named in `scales`; how many."""
    marked = 0
    for name, parameter in model.named_parameters():
        factor = scales.get(name)
        if factor is not None:
            parameter._optim = {"lr": lr * factor}
            marked += 1
    return marked


def _build_model(cls: type, args: Any) -> Any:
    model = super(cls, cls).build_model(args)  # type: ignore[misc]
    path = os.environ.get(ENV)
    if path:
        with open(path, encoding="utf-8") as f:
            scales = json.load(f)["scales"]
        mark(model, scales, float((args.optim_conf or {}).get("lr", 1e-3)))
    return model


# LrGrouped<Task>, found by name in DDP's spawned workers as `espzoo.train.lr_groups.LrGrouped...`
_GROUPED = DerivedTasks(__name__, "LrGrouped", {"build_model": _build_model})
__getattr__ = _GROUPED
