"""ESPnet's tasks with adapters: `AdaptedASRTask` and its S2T siblings build the model and then apply the
adapter config named by $ESPZOO_LORA, so ESPnet's own trainer trains only the adapters.
"""

from __future__ import annotations

import os
from typing import Any

from espzoo.errors import AdapterError
from espzoo.lora.config import ENV, AdapterConfig
from espzoo.lora.layer import apply_adapters
from espzoo.lora.weights import use_exact_averaging
from espzoo.models.espnet_env import DerivedTasks


def adapted_task(base_task: type) -> type:
    """ESPnet task `base_task` (ASRTask, ASRTransducerTask, either S2TTask) whose models carry $ESPZOO_LORA's
    adapters."""
    adapted = _ADAPTED.of(base_task)
    if adapted is None:
        raise AdapterError(f"LoRA is not available for ESPnet's {base_task.__module__}.{base_task.__name__} models; "
                           "fine-tune them without --lora.")
    return adapted


def _build_model(cls: type, args: Any) -> Any:
    model = super(cls, cls).build_model(args)  # type: ignore[misc]
    path = os.environ.get(ENV)
    if path:
        apply_adapters(model, AdapterConfig.read(path))
        use_exact_averaging()  # in DDP's spawned workers too (rank 0's averages), which espzoo.train.asr_train misses
    return model


def _build_optimizers(cls: type, args: Any, model: Any) -> list[Any]:
    """ESPnet's optimizer over the trainable tensors only (ESPnet passes every parameter; Adam would skip the
    frozen ones, which never get a gradient, but its param groups and checkpoint would still list them)."""
    if getattr(args, "sharded_ddp", False) or getattr(args, "exclude_weight_decay", False):
        return super(cls, cls).build_optimizers(args, model)  # type: ignore[misc]
    from espnet2.tasks.abs_task import optim_classes

    optim_class = optim_classes.get(args.optim)
    if optim_class is None:
        raise ValueError(f"must be one of {list(optim_classes)}: {args.optim}")
    return [optim_class([p for p in model.parameters() if p.requires_grad], **args.optim_conf)]


# Adapted<Task>, e.g. AdaptedASRTask: found by name in DDP's spawned workers as `espzoo.lora.espnet_tasks.Adapted...`
_ADAPTED = DerivedTasks(__name__, "Adapted", {"build_model": _build_model, "build_optimizers": _build_optimizers})
__getattr__ = _ADAPTED
