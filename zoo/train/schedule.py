"""Schedules for transfer: a frozen warm-up (`--warmup-frozen N`) and layer-wise learning-rate decay
(`--lr-decay D`), both through ESPnet's own options rather than a fork of its trainer.

- The warm-up: for the first N epochs the transferred body (every parameter the plan loads as it is) is frozen with
  ESPnet's `freeze_param`, and only what is new or transplanted (vocabulary-sized rows, excluded or fresh modules)
  trains; then all of it. ESPnet has no hook to unfreeze within a run, so it is two ESPnet runs, as espzoo already
  chains them: OUT/warmup trains N epochs frozen, and OUT's run starts from its last epoch (`--init_param`) for the
  remaining max_epoch - N epochs.
- The decay: encoder block i of L (`encoder.encoders.i`) learns at lr * D^(L - i), what lies below the blocks (front
  end, pre-encoder, the encoder's input layer) at lr * D^(L + 1), everything else (the encoder's final norm, the
  decoder, CTC, joint network) at lr. ESPnet makes one optimizer parameter group per distinct `_optim` setting of a
  parameter (espnet2/optimizers/optim_groups.configure_optimizer, on with `exclude_weight_decay: true`): espzoo's
  training child sets `_optim = {"lr": ...}` on each parameter as ESPnet builds the model (espzoo.train.lr_groups).
  With `exclude_weight_decay_conf` keeping weight decay on biases and norms, only ESPnet's nn.Embedding parameters
  (none in a speech encoder) are moved to a group of their own, at lr.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from espzoo.errors import ScheduleError
from espzoo.transfer.plan import TransferPlan, smallest_modules
from espzoo.utils.fs import write_text

LR_GROUPS_NAME = "lr_groups.json"
_BLOCK = re.compile(r"^encoder\.encoders\.(\d+)\.")
_BELOW = ("frontend.", "preencoder.", "encoder.embed.")


@dataclass(frozen=True)
class ScheduleOptions:
    """`--warmup-frozen` and `--lr-decay`; the defaults change nothing."""

    warmup_frozen: int = 0  # epochs with the transferred body frozen, before all of it trains
    lr_decay: float = 1.0  # layer-wise learning-rate decay for the encoder (1: one learning rate)

    @property
    def off(self) -> bool:
        return self.warmup_frozen == 0 and self.lr_decay == 1.0

    def describe(self) -> str:
        parts = []
        if self.warmup_frozen:
            parts.append(f"{self.warmup_frozen} warm-up epoch(s) with the transferred body frozen")
        if self.lr_decay != 1.0:
            parts.append(f"layer-wise lr decay {self.lr_decay:g}")
        return ", ".join(parts) or "none"


def check_schedule(options: ScheduleOptions, max_epoch: int, *, lora: bool = False) -> None:
    """Refuse a schedule that cannot work, before any data or model work."""
    if not isinstance(options.warmup_frozen, int) or options.warmup_frozen < 0:
        raise ScheduleError(f"--warmup-frozen {options.warmup_frozen} is negative; give a number of epochs (0: none).")
    if options.warmup_frozen and options.warmup_frozen >= max_epoch:
        raise ScheduleError(f"--warmup-frozen {options.warmup_frozen} leaves no epoch of --max-epoch {max_epoch} to "
                            "train the whole model; give fewer warm-up epochs or more epochs.")
    if not 0.0 < options.lr_decay <= 1.0:
        raise ScheduleError(f"--lr-decay {options.lr_decay:g} is outside (0, 1]; give a factor such as 0.9 "
                            "(1 turns it off).")
    if lora and not options.off:
        raise ScheduleError("--warmup-frozen and --lr-decay do not apply to --lora (only the adapters train); "
                            "drop one or the other.")


def frozen_body(plan: TransferPlan) -> list[str]:
    """The modules (at ESPnet's freeze_param boundaries) whose parameters all load as they are from the pretrained
    model: what the warm-up freezes. ScheduleError when nothing else would train."""
    parameters = [r for r in plan.rows if r.target_key in plan.parameters and r.target_key not in plan.aliases]
    body = [r.target_key for r in parameters if r.action in ("load", "rename")]
    if len(body) == len(parameters):
        raise ScheduleError("--warmup-frozen: every parameter loads from the pretrained model as it is (nothing new "
                            "or transplanted to warm up); drop --warmup-frozen, or give a new vocabulary or --exclude.")
    return smallest_modules(body, [r.target_key for r in parameters])


def lr_scales(names: Iterable[str], decay: float) -> dict[str, float]:
    """{parameter name: its learning-rate factor} for every parameter whose factor is not 1 (see the docstring)."""
    names = list(names)
    blocks = {int(m.group(1)) for n in names if (m := _BLOCK.match(n))}
    if not blocks:
        raise ScheduleError("--lr-decay needs an encoder made of numbered blocks (encoder.encoders.N); this model "
                            "has none, so drop --lr-decay.")
    depth = max(blocks) + 1
    scales = {}
    for name in names:
        if m := _BLOCK.match(name):
            scales[name] = decay ** (depth - int(m.group(1)))
        elif name.startswith(_BELOW):
            scales[name] = decay ** (depth + 1)
    return {n: round(s, 12) for n, s in scales.items() if s != 1.0}


def write_lr_groups(plan: TransferPlan, decay: float, dest: Path) -> Path:
    """`dest/lr_groups.json`: the factors lr_scales gives the plan's parameters, read by the training child."""
    scales = lr_scales(sorted(plan.parameters), decay)
    path = Path(dest) / LR_GROUPS_NAME
    write_text(path, json.dumps({"decay": decay, "scales": scales}, indent=1) + "\n")
    return path


def lr_groups_config(config: dict[str, Any]) -> dict[str, Any]:
    """`config` set for ESPnet's parameter groups (configure_optimizer), weight decay kept where it was."""
    conf = dict(config.get("exclude_weight_decay_conf") or {})
    conf.setdefault("bias_weight_decay", True)
    conf.setdefault("normalization_weight_decay", True)
    return dict(config, exclude_weight_decay=True, exclude_weight_decay_conf=conf)
