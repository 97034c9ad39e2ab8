"""Adapters as files: planned for a fine-tune, written beside an export, read back, continued.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from espzoo.errors import AdapterError, AdapterExportError
from espzoo.lora.config import CONFIG_NAME, LORA_SUFFIXES, AdapterConfig, LoraOptions
from espzoo.lora.layer import AdapterSummary, apply_adapters
from espzoo.lora.weights import adapter_state, loaded_from_base, merged_state, stored_ranks
from espzoo.repo import ADAPTER_NAME, is_adapter_only
from espzoo.utils.fs import atomic_write


def default_train_also(plan_rows: Iterable[Any], parameters: Iterable[str]) -> list[str]:
    """What trains fully beside the adapters by default: every parameter the transfer does not load unchanged
    (vocabulary rows transplanted for a new vocabulary, excluded or fresh modules): a frozen random or
    re-indexed layer could never learn."""
    params = set(parameters)
    return [r.target_key for r in plan_rows if r.target_key in params and r.action not in ("load", "rename")]


def plan_adapters(
    plan: Any,
    options: LoraOptions,
    *,
    base_repo: str | None = None,
    base_commit: str | None = None,
    continues: AdapterConfig | None = None,
) -> tuple[AdapterConfig, AdapterSummary]:
    """The adapter config for a transfer plan (targets and train_also checked against the model, built on the
    meta device: no memory) and what it would train. `continues`: the config of an adapter this run continues
    (what it trained fully keeps training; what it carried stays carried)."""
    from espzoo.models.build import build_model

    config = dict(plan.target_config)
    stats = (config.get("normalize_conf") or {}).get("stats_file")
    if config.get("normalize") == "global_mvn" and not (stats and Path(stats).is_file()):
        config["normalize"], config["normalize_conf"] = None, {}  # buffers only; new stats come later
    model = build_model(config, device="meta")
    params = [n for n, _ in model.named_parameters()]
    train_also = options.train_also if options.train_also is not None else default_train_also(plan.rows, params)
    adapter = options.config(train_also, base_repo, base_commit)
    if continues is not None:
        adapter = replace(adapter, train_also=tuple(dict.fromkeys([*continues.train_also, *train_also])),
                          carried=continues.carried)
    summary = apply_adapters(model, adapter)
    del model
    return adapter, summary


def experiment_adapter(root: Path) -> AdapterConfig | None:
    """The adapter config of an experiment dir or adapter-only export, None for a plain model."""
    path = Path(root) / CONFIG_NAME
    return AdapterConfig.read(path) if path.is_file() else None


def write_weights(checkpoint: Path, adapter: AdapterConfig | None, model_file: Path, root: Path, mode: str) -> bool:
    """An export's weights: `merge` writes the plain merged model to `model_file`; `adapter-only` writes
    `root/adapter.pth` and `root/adapter_config.yaml` instead. Returns whether the model file was written."""
    from espzoo.models.bundle import load_state_dict

    if adapter is None:
        if mode == "adapter-only":
            raise AdapterExportError(f"{checkpoint.parent} was not trained with --lora; there is no adapter to "
                                     "export alone (export the whole model without --adapter-only).")
        import shutil

        shutil.copyfile(checkpoint, model_file)
        return True
    state = load_state_dict(checkpoint)
    if mode == "adapter-only":
        if not adapter.base_repo or not adapter.base_commit:
            raise AdapterExportError(f"{checkpoint.parent} was fine-tuned from a local model, not a hub repo: an "
                                     "adapter-only export could not name its base; export merged (--merge).")
        from_base = loaded_from_base(checkpoint.parent / "plan.json")
        kept = adapter_state(state, adapter, from_base)
        torch.save(kept, root / ADAPTER_NAME)
        as_stored(adapter, kept).write(root / CONFIG_NAME)
        return False
    torch.save(merged_state(state, adapter), model_file)
    return True


def as_stored(adapter: AdapterConfig, state: dict[str, Any]) -> AdapterConfig:
    """The config that describes `state`'s adapters as they are: an n-best average stores rank n*r
    (`average_states`), written as such with alpha scaled to keep alpha/rank (the same model)."""
    ranks = set(stored_ranks(state).values())
    if len(ranks) != 1 or (rank := ranks.pop()) == adapter.rank:
        return adapter
    return replace(adapter, rank=rank, alpha=adapter.scaling * rank)


def adapted_state(root: Path, model_state: dict[str, Any]) -> tuple[AdapterConfig, dict[str, Any]]:
    """The full adapted state of an experiment dir or adapter-only export at `root`: for an adapter-only
    export, the pinned base model (pulled) with adapter.pth on top; for an experiment, `model_state` itself."""
    adapter = experiment_adapter(root)
    if adapter is None:
        raise AdapterError(f"{root} holds no {CONFIG_NAME}; it carries no LoRA adapter.")
    if not is_adapter_only(root):
        return adapter, model_state
    from espzoo.hub.download import pull
    from espzoo.models.bundle import load_state_dict, open_bundle

    if not adapter.base_repo or not adapter.base_commit:
        raise AdapterError(f"{root / CONFIG_NAME} names no base repo@commit; the adapter cannot be applied.")
    base = open_bundle(pull(adapter.base_repo, adapter.base_commit))
    state = dict(load_state_dict(base.checkpoint))
    extra = load_state_dict(root / ADAPTER_NAME)
    _check_base(root, adapter, state, extra)
    state.update(extra)
    return adapter, state


def _check_base(root: Path, adapter: AdapterConfig, base: dict[str, Any], extra: dict[str, Any]) -> None:
    """Each adapter pair must sit on a Linear of the base with its shapes (lora_A: rank x in, lora_B: out x rank):
    an adapter config pointed at another base model is refused instead of applied to the wrong weights."""
    for key, tensor in extra.items():
        if not key.endswith(LORA_SUFFIXES):
            continue
        module, part = key.rsplit(".", 1)
        weight = base.get(f"{module}.weight")
        fits = weight is not None and weight.dim() == 2 and tensor.dim() == 2 and (
            tensor.shape[1] == weight.shape[1] if part == "lora_A" else tensor.shape[0] == weight.shape[0])
        if not fits:
            found = "has no such layer" if weight is None else f"has {module}.weight of shape {tuple(weight.shape)}"
            raise AdapterError(f"{root / ADAPTER_NAME} holds {key} of shape {tuple(tensor.shape)}, but the base "
                               f"{adapter.base_repo}@{adapter.base_commit} {found}: the adapter belongs to another "
                               "base model; fix base_repo and base_commit in its adapter_config.yaml.")


def attach(model: torch.nn.Module, root: Path, model_state: dict[str, Any]) -> dict[str, Any]:
    """Give `model` (built from the config alone) the adapters of `root` and return the state to load into it."""
    adapter, state = adapted_state(root, model_state)
    apply_adapters(model, adapter, stored_ranks(state))
    missing = [k for k in model.state_dict() if k not in state]
    if missing:
        raise AdapterError(f"{root} lacks {len(missing)} tensors of the adapted model ({', '.join(missing[:4])}); "
                           "the adapter and its base model do not belong together.")
    return state


_MATERIALIZED: dict[tuple[str, int, int], Path] = {}


def materialized_base(root: Path) -> Path:
    """base + the adapter's full tensors, written once per process (transfer opens a source more than once)
    under $ESPZOO_HOME/tmp and removed at exit."""
    import atexit
    import shutil
    import tempfile

    from espzoo.utils.home import espzoo_home

    info = (root / ADAPTER_NAME).stat()
    key = (str((root / ADAPTER_NAME).resolve()), info.st_mtime_ns, info.st_size)
    if key in _MATERIALIZED and _MATERIALIZED[key].is_file():
        return _MATERIALIZED[key]
    _, state = adapted_state(root, {})
    plain = {k: v for k, v in state.items() if not k.endswith(LORA_SUFFIXES)}
    (espzoo_home() / "tmp").mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="adapted-", dir=espzoo_home() / "tmp"))
    atexit.register(shutil.rmtree, folder, True)
    path = folder / "model.pth"
    atomic_write(path, lambda tmp: torch.save(plain, tmp))
    _MATERIALIZED[key] = path
    return path


def continued_adapter(
    root: Path, options: LoraOptions | None, plan: Any
) -> tuple[AdapterConfig, AdapterSummary]:
    """The adapter config of a run that continues the adapter-only export at `root`, and what it trains: its
    targets, scaling and base (repo@commit, so the new run exports against the same base); the rank it stores
    (n*rank after an n-best average, with alpha scaled to keep alpha/rank); what trains fully is what it trained
    plus what this plan does not load unchanged (a new vocabulary's rows). --lora options may repeat the
    adapter's, not change them."""
    exported, rank, tensors = check_continuation(root, options)
    carried = tuple(k for k in tensors if not k.endswith(LORA_SUFFIXES))
    lora = LoraOptions(rank, exported.scaling * rank, options.dropout if options else exported.dropout,
                       exported.targets, options.train_also if options else None)
    return plan_adapters(plan, lora, base_repo=exported.base_repo, base_commit=exported.base_commit,
                         continues=replace(exported, carried=carried))


def check_continuation(root: Path, options: LoraOptions | None) -> tuple[AdapterConfig, int, dict[str, Any]]:
    """(config, stored rank, tensors) of the adapter-only export at `root`, refusing --lora options that would
    change it (before anything is written)."""
    from espzoo.models.bundle import load_state_dict

    exported = AdapterConfig.read(Path(root) / CONFIG_NAME)
    tensors = load_state_dict(Path(root) / ADAPTER_NAME)
    ranks = set(stored_ranks(tensors).values())
    if len(ranks) != 1:
        raise AdapterError(f"{Path(root) / ADAPTER_NAME} holds {'mixed-rank' if ranks else 'no'} LoRA tensors; "
                           "re-export the adapter.")
    rank = ranks.pop()
    if options is not None:
        changed = [f"--lora {options.rank}" if options.rank not in (exported.rank, rank) else None,
                   f"--lora-alpha {options.alpha:g}" if options.alpha not in (None, exported.alpha) else None,
                   f"--lora-targets {','.join(options.targets)}"
                   if options.targets and tuple(options.targets) != exported.targets else None]
        shown = [c for c in changed if c]
        if shown:
            raise AdapterError(f"The model is a LoRA adapter-only export (rank {exported.rank}, alpha "
                               f"{exported.alpha or exported.rank:g}) that fine-tuning continues as it is: drop "
                               f"{', '.join(shown)}, or start a new adapter from its merged export.")
    return exported, rank, tensors


def continue_adapter(init_checkpoint: Path, root: Path, summary: AdapterSummary) -> None:
    """Put the adapter-only export's lora_* tensors into the run's init checkpoint (ESPnet's --init_param then
    loads them into the adapted model: training continues the adapter instead of starting it at B = 0)."""
    from espzoo.models.bundle import load_state_dict

    tensors = {k: v for k, v in load_state_dict(Path(root) / ADAPTER_NAME).items() if k.endswith(LORA_SUFFIXES)}
    layers = set(stored_ranks(tensors))
    if layers != set(summary.targets):
        missing = sorted(set(summary.targets) - layers) or sorted(layers - set(summary.targets))
        raise AdapterError(f"{root / ADAPTER_NAME} does not fit the layers its config targets ({', '.join(missing[:4])}"
                           "); re-export the adapter.")
    state = dict(load_state_dict(init_checkpoint))
    state.update({k: v.clone() for k, v in tensors.items()})
    atomic_write(Path(init_checkpoint), lambda tmp: torch.save(state, tmp))
