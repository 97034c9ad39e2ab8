"""Adapter tensors in checkpoints: ranks stored, merged states, exact averaging of n-best epochs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from espzoo.errors import AdapterError
from espzoo.lora.config import LORA_SUFFIXES, AdapterConfig
from espzoo.lora.layer import _selects


def stored_ranks(state: dict[str, Any]) -> dict[str, int]:
    """The rank each adapted layer of `state` stores (its lora_A's rows)."""
    return {k[: -len(".lora_A")]: int(v.shape[0]) for k, v in state.items() if k.endswith(".lora_A")}


def adapter_keys(state: Iterable[str]) -> list[str]:
    return [k for k in state if k.endswith(LORA_SUFFIXES)]


def merged_state(state: dict[str, Any], config: AdapterConfig) -> dict[str, Any]:
    """A plain state dict: each adapted weight becomes `W + B @ A * scaling`, the `lora_*` tensors go."""
    pairs = sorted({k[: -len(".lora_A")] for k in state if k.endswith(".lora_A")})
    if not pairs:
        raise AdapterError("This state holds no LoRA tensors: it is already merged (or never had adapters).")
    out = {k: v for k, v in state.items() if not k.endswith(LORA_SUFFIXES)}
    for module in pairs:
        weight = state[f"{module}.weight"]
        delta = (state[f"{module}.lora_B"].float() @ state[f"{module}.lora_A"].float()) * config.scaling
        out[f"{module}.weight"] = (weight.float() + delta).to(weight.dtype)
    return out


def average_states(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The n-best average of LoRA checkpoints, exact. ESPnet averages every tensor on its own, lora_A and lora_B
    too, which is wrong: mean(B) @ mean(A) is not mean(B @ A), the delta the checkpoints' models apply. Here each
    adapted layer's delta is the mean of the checkpoints' deltas, stored exactly as a LoRA of rank n*r (the A's
    stacked, the B's side by side and divided by n: [B1/n .. Bn/n] @ [A1; ..; An] = mean(Bi @ Ai)); the scaling
    stays alpha/rank of the adapter config, whatever rank a layer stores (`attach` reads it from the tensors).
    A tensor equal in every checkpoint (the frozen base) is kept bit for bit, other floats are averaged and
    integers summed as ESPnet does (BatchNorm's num_batches_tracked)."""
    if not states:
        raise AdapterError("There are no checkpoints to average.")
    n, first = len(states), states[0]
    out: dict[str, torch.Tensor] = {}
    for key, value in first.items():
        if key.endswith(".lora_B"):
            continue  # with its lora_A below
        if key.endswith(".lora_A"):
            module = key[: -len(".lora_A")]
            out[key] = torch.cat([s[key] for s in states], dim=0)
            out[f"{module}.lora_B"] = torch.cat([s[f"{module}.lora_B"] for s in states], dim=1) / n
            continue
        values = [s[key] for s in states]
        if all(torch.equal(value, v) for v in values[1:]):
            out[key] = value.clone()
            continue
        total = value.clone()
        for other in values[1:]:
            total += other
        out[key] = total / n if total.is_floating_point() or total.is_complex() else total
    return out


def average_nbest_models(
    output_dir: Path,
    reporter: Any,
    best_model_criterion: Sequence[Sequence[str]],
    nbest: int | Sequence[int],
    suffix: str | None = None,
    use_deepspeed: bool = False,
) -> None:
    """ESPnet's `average_nbest_models` (same epochs, files and symlinks) with `average_states` for the average.
    Installed by `use_exact_averaging` in the training process of a LoRA run."""
    if use_deepspeed:
        from espnet2.main_funcs.average_nbest_models import average_nbest_models as espnet_average

        return espnet_average(output_dir, reporter, best_model_criterion, nbest, suffix, use_deepspeed)
    output_dir = Path(output_dir)
    nbests = [nbest] if isinstance(nbest, int) else list(nbest) or [1]
    tail = f"{suffix}." if suffix is not None else ""
    for ph, cr, mode in best_model_criterion:
        if not reporter.has(ph, cr):
            continue
        epochs = [e for e, _ in reporter.sort_epochs_and_values(ph, cr, mode)[: max(nbests)]]
        counts = [i for i in nbests if i <= len(epochs)] or [1]
        for count in counts:
            if count == 0:
                continue
            target = output_dir / f"{ph}.{cr}.ave_{count}best.{tail}pth"
            if count == 1:  # the best epoch itself, linked as ESPnet does
                _relink(target, f"{epochs[0]}epoch.pth")
                continue
            states = [torch.load(output_dir / f"{e}epoch.pth", map_location="cpu", weights_only=True, mmap=True)
                      for e in epochs[:count]]
            torch.save(average_states(states), target)
            del states
        _relink(output_dir / f"{ph}.{cr}.ave.{tail}pth", f"{ph}.{cr}.ave_{max(counts)}best.{tail}pth")


def _relink(link: Path, target: str) -> None:
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)


def use_exact_averaging() -> None:
    """Make ESPnet's trainer average LoRA checkpoints with `average_nbest_models` in this process; a wrapper
    already around ESPnet's own function (espzoo.train.asr_train's) is left in place, so call this before it."""
    from espnet2.main_funcs import average_nbest_models as espnet_module
    from espnet2.train import trainer as espnet_trainer

    if espnet_trainer.average_nbest_models is espnet_module.average_nbest_models:
        espnet_trainer.average_nbest_models = average_nbest_models


def adapter_state(
    state: dict[str, Any], config: AdapterConfig, from_base: Iterable[str] | None = None
) -> dict[str, Any]:
    """What an adapter-only export keeps: the `lora_*` tensors, the fully trained (`train_also`) ones and every
    tensor that is not the base model's own unchanged (`from_base`: what the transfer plan loaded as it is, e.g.
    not the transplanted rows of a new vocabulary or new normalization stats), so base + adapter is the model."""
    keep = adapter_keys(state)
    if not keep:
        raise AdapterError("This state holds no LoRA tensors; there is no adapter to export.")
    base = set(from_base) if from_base is not None else {k for k in state if not k.startswith("normalize.")}
    base -= set(config.carried)  # a continued adapter's own tensors came through the plan, not from the base
    trained = {k for k in state if any(_selects(p, k) for p in config.train_also)}
    rest = [k for k in state if not k.endswith(LORA_SUFFIXES) and (k in trained or k not in base)]
    return {k: state[k].clone() for k in [*keep, *rest]}


def loaded_from_base(plan_json: Path) -> set[str] | None:
    """The tensors a written plan.json says came unchanged from the base model (spec 0), None without one."""
    import json

    if not Path(plan_json).is_file():
        return None
    rows = json.loads(Path(plan_json).read_text(encoding="utf-8")).get("rows") or []
    return {r["target_key"] for r in rows
            if r.get("action") == "load" and r.get("spec") == 0 and r.get("source_key") == r.get("target_key")}
