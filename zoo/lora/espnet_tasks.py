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
from espzoo.tasks import TASKS


def adapted_task(base_task: type) -> type:
    """ESPnet task `base_task` (ASRTask, ASRTransducerTask, either S2TTask) whose models carry $ESPZOO_LORA's
    adapters."""
    for key, where in _TASKS.items():
        if where == (base_task.__module__, base_task.__name__):
            return __getattr__(f"Adapted{key}")
    raise AdapterError(f"LoRA is not available for ESPnet's {base_task.__module__}.{base_task.__name__} models; "
                       "fine-tune them without --lora.")


_built: dict[str, type] = {}  # the Adapted<Task> classes made so far


# By espzoo's name for it (espzoo.tasks.Task.lora_name): ESPnet's module and class (both S2T tasks name their
# class S2TTask).
_TASKS = {task.lora_name: task.espnet_task for task in TASKS}


def __getattr__(name: str) -> type:
    # Built on first use (ESPnet's import is heavy) and found by name again in DDP's spawned workers, which
    # unpickle the task class as `espzoo.lora.Adapted<Task>`.
    key = name.removeprefix("Adapted")
    if not name.startswith("Adapted") or key not in _TASKS:
        raise AttributeError(name)
    if name not in _built:
        import importlib

        module, task_name = _TASKS[key]
        base = getattr(importlib.import_module(module), task_name)
        _built[name] = type(name, (base,), {"build_model": classmethod(_build_model),
                                            "build_optimizers": classmethod(_build_optimizers),
                                            "__module__": __name__, "__qualname__": name})
    return _built[name]


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
