"""LoRA that trains what it should: low-rank adapters on a frozen base, merged or shared as a small file.

    from espzoo.lora import AdapterConfig, apply_adapters, merged_state

    config = AdapterConfig(rank=8, alpha=16, targets=("encoder", "decoder"))
    summary = apply_adapters(model, config)     # Linear layers wrapped; everything else frozen but train_also
    merged = merged_state(model_state, config)  # a plain ESPnet state dict: W + B @ A * alpha / rank

ESPnet's own path (`use_adapter: true`, `create_lora_adapter`, loralib) wraps the target Linears but leaves every
other parameter training unless `freeze_param` is also set (the user pays full fine-tuning plus the adapters),
merges in `eval()` and unmerges in `train()` (weights applied twice when a merged state is saved and reloaded,
espnet#6107), and renames nothing consistently enough to reload an adapter-only file (#5812). Here:

- `LoRALinear` *is* an `nn.Linear` (same `weight`/`bias` names, so a base checkpoint loads into it unchanged)
  with two more tensors `lora_A` (rank x in) and `lora_B` (out x rank, zero at start: the adapted model starts
  as the base). The frozen base weight gets no gradient: autograd computes only the low-rank path's.
- Merging is explicit (`merge()`), records itself (`merged`), refuses a second merge, and a merged layer refuses
  to be saved (its weight already holds the delta): a merged weight can never be stored beside its adapter.
- `merged_state` folds adapters into a state dict and drops them: the result has no `lora_*` keys, so folding
  it again is impossible (it says so).
- Targets are module patterns checked against the model like `--exclude` (a pattern matching no Linear layer
  is one sentence naming the closest modules); by default every attention and feed-forward Linear of the
  encoder and decoder.

- ESPnet's n-best average of the epoch checkpoints is exact (`average_states`): the mean of their merged
  deltas, stored as an adapter of rank n*r, where ESPnet alone averages lora_A and lora_B apart.
- An adapter-only export is a model to continue from (`adapter_source`, `continued_adapter`): the pinned base
  is pulled, the adapter's tensors go into the init checkpoint, and the run exports against the same base.

Training goes through ESPnet's own trainer: `adapted_task(ASRTask)` is the task whose `build_model` wraps the
built model (before ESPnet loads `--init_param`, resumes or builds the optimizer) and whose optimizer only holds
the trainable tensors. It reads the adapter config from $ESPZOO_LORA so DDP's spawned workers see it too.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from espzoo._fs import atomic_write
from espzoo.errors import ExportError, TransferError
from espzoo.repo import ADAPTER_CONFIG_NAME, ADAPTER_NAME, is_adapter_only  # noqa: F401 (re-exported)

ENV = "ESPZOO_LORA"  # path of the adapter_config.yaml the training process applies
CONFIG_NAME = ADAPTER_CONFIG_NAME  # the adapter-only layout lives in espzoo.repo
LORA_SUFFIXES = (".lora_A", ".lora_B")
# An attention or feed-forward block, by class or by attribute name (ESPnet's conformer, transformer,
# branchformer, e_branchformer, whisper and s3prl blocks all match one or the other).
_BLOCK_CLASS = re.compile(r"attention|feedforward", re.IGNORECASE)
_BLOCK_NAME = re.compile(r"^(self_attn|src_attn|attn|attention|feed_forward\w*|mlp|ffn)$")
DEFAULT_SCOPES = ("encoder", "decoder")


class AdapterError(TransferError):
    """An adapter setting or file that cannot be used."""


class AdapterExportError(ExportError):
    """An experiment whose adapters cannot be exported as asked."""


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
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
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


# ---------------------------------------------------------------------------------------------------- the layer


class LoRALinear(torch.nn.Linear):
    """`base(x) + dropout(x) @ A.T @ B.T * scaling` over a frozen `nn.Linear`, keeping its parameter names."""

    def __init__(self, base: torch.nn.Linear, rank: int, scaling: float, dropout: float = 0.0) -> None:
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight  # the base's own tensors, not copies
        self.bias = base.bias
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = torch.nn.Parameter(torch.empty(rank, self.in_features, **factory))
        self.lora_B = torch.nn.Parameter(torch.zeros(self.out_features, rank, **factory))
        torch.nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear (and the LoRA paper's code)
        self.scaling = scaling
        self.lora_dropout = torch.nn.Dropout(dropout) if dropout > 0 else torch.nn.Identity()
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.nn.functional.linear(x, self.weight, self.bias)
        if self.merged:
            return out
        low = torch.nn.functional.linear(torch.nn.functional.linear(self.lora_dropout(x), self.lora_A), self.lora_B)
        # In place, scaled in the same pass: linear's backward needs its input, not its output, and no
        # out-sized temporaries are made (the low-rank path is two thin matmuls; the adds were the cost).
        return out.add_(low, alpha=self.scaling)

    def delta(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the adapter into the weight (inference runs at the base model's cost)."""
        if self.merged:
            raise AdapterError("This LoRA layer is already merged; merging again would add its delta twice.")
        self.weight += self.delta().to(self.weight.dtype)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            raise AdapterError("This LoRA layer is not merged; there is nothing to unmerge.")
        self.weight -= self.delta().to(self.weight.dtype)
        self.merged = False

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        if self.merged:  # weight + delta stored beside A and B would apply the delta twice on reload (#6107)
            raise AdapterError("A merged LoRA layer cannot be saved; unmerge it or save merged_state(...) instead.")
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.lora_A.shape[0]}, scaling={self.scaling:g}, merged={self.merged}"


# ---------------------------------------------------------------------------------------------------- targets


def _linears(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and name}


def default_targets(model: torch.nn.Module) -> list[str]:
    """Every Linear of the encoder and decoder inside an attention or feed-forward block."""
    modules = dict(model.named_modules())
    found = []
    for name in _linears(model):
        if not any(name.startswith(scope + ".") for scope in DEFAULT_SCOPES):
            continue
        parts = name.split(".")
        ancestors = [".".join(parts[:i]) for i in range(1, len(parts))]
        if any(_BLOCK_CLASS.search(type(modules[a]).__name__) or _BLOCK_NAME.match(a.rsplit(".", 1)[-1])
               for a in ancestors):
            found.append(name)
    return found


def _selects(pattern: str, name: str) -> bool:
    """A module pattern: the module itself or anything under it (`encoder.encoders.1`), a glob
    (`encoder.*.self_attn.linear_q`), or a last-part name matching anywhere (`linear_q`, `w_*`)."""
    pattern = pattern.strip(" .")
    if name == pattern or name.startswith(pattern + "."):
        return True
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern + ".*")
    return "." not in pattern and pattern in name.split(".")


def resolve_targets(model: torch.nn.Module, patterns: Sequence[str]) -> list[str]:
    """The Linear modules the patterns name (default: `default_targets`); a pattern naming none is an error."""
    if not patterns:
        found = default_targets(model)
        if not found:
            raise AdapterError("This model has no attention or feed-forward Linear layers under encoder/decoder; "
                               "name the layers to adapt with --lora-targets.")
        return found
    linears = list(_linears(model))
    found: dict[str, None] = {}
    for pattern in patterns:
        hits = [name for name in linears if _selects(pattern, name)]
        if not hits:
            raise _no_match("--lora-targets", pattern, linears, "Linear layer")
        found.update(dict.fromkeys(hits))
    return [name for name in linears if name in found]  # model order


def resolve_train_also(model: torch.nn.Module, patterns: Iterable[str]) -> list[str]:
    """The parameter names `--train-also` patterns name (modules or tensors); a pattern naming none is an error."""
    names = [n for n, _ in model.named_parameters() if not n.endswith(LORA_SUFFIXES)]
    found: dict[str, None] = {}
    for pattern in patterns:
        hits = [n for n in names if _selects(pattern, n)]
        if not hits:
            raise _no_match("--train-also", pattern, names, "parameter")
        found.update(dict.fromkeys(hits))
    return list(found)


def _no_match(option: str, pattern: str, names: Sequence[str], what: str) -> AdapterError:
    modules: dict[str, None] = {}
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            modules[".".join(parts[:i])] = None
    close = difflib.get_close_matches(pattern, list(modules), n=4, cutoff=0.4)
    top = sorted({n.split(".")[0] for n in names})
    hint = f"closest: {', '.join(close)}" if close else f"top-level modules: {', '.join(top)}"
    return AdapterError(f"{option} {pattern!r} matches no {what} of the model ({hint}).")


# ---------------------------------------------------------------------------------------------------- applying


@dataclass(frozen=True)
class AdapterSummary:
    """What `apply_adapters` did: which layers carry adapters, and what trains."""

    targets: list[str]  # adapted Linear modules
    adapter_shapes: dict[str, tuple[int, ...]]  # new tensors: lora_A/lora_B per target
    trained_base: list[str]  # base parameters that train fully (--train-also)
    trainable: int  # parameters (values) that train
    frozen: int
    total: int

    @property
    def share(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "targets": self.targets,
            "adapter_tensors": {k: list(v) for k, v in self.adapter_shapes.items()},
            "train_also": self.trained_base,
            "trainable": self.trainable,
            "frozen": self.frozen,
            "total": self.total,
            "share": self.share,
        }


def apply_adapters(
    model: torch.nn.Module, config: AdapterConfig, ranks: dict[str, int] | None = None
) -> AdapterSummary:
    """Wrap the target Linears of `model` in place and freeze every parameter but the adapters and train_also.
    `ranks`: the rank a layer's stored adapter has where it is not `config.rank` (an n-best average stores
    n*rank, see `average_states`); the scaling is `config.scaling` either way."""
    targets = resolve_targets(model, config.targets)
    trained = set(resolve_train_also(model, config.train_also))
    for param in model.parameters():
        param.requires_grad_(False)
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        base = getattr(parent, child)
        if isinstance(base, LoRALinear):
            raise AdapterError(f"{name} already carries a LoRA adapter; adapters are applied once, to the base model.")
        rank = (ranks or {}).get(name, config.rank)
        setattr(parent, child, LoRALinear(base, rank, config.scaling, config.dropout))
    for name, param in model.named_parameters():
        param.requires_grad_(name.endswith(LORA_SUFFIXES) or name in trained)
    _freeze_running_stats(model)
    params = dict(model.named_parameters())
    trainable = sum(p.numel() for p in params.values() if p.requires_grad)
    total = sum(p.numel() for p in params.values())
    shapes = {k: tuple(v.shape) for k, v in params.items() if k.endswith(LORA_SUFFIXES)}
    return AdapterSummary(targets, shapes, sorted(trained), trainable, total - trainable, total)


def _freeze_running_stats(model: torch.nn.Module) -> None:
    """A frozen batch norm (the conformer's convolution module has them) normalizes with its pretrained
    statistics in training too: otherwise its running mean and variance would drift on the new data, a part of
    the "frozen" model that trains anyway (as it does under ESPnet's freeze_param)."""
    for module in model.modules():
        params = list(module.parameters(recurse=False))
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in params):
            module.register_forward_pre_hook(_use_running_stats)


def _use_running_stats(module: torch.nn.Module, args: Any) -> None:
    module.training = False


def merge_adapters(model: torch.nn.Module) -> int:
    """Merge every LoRA layer of `model` in place (for inference); returns how many."""
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    for layer in layers:
        layer.merge()
    return len(layers)


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
    already around ESPnet's own function (espzoo._asr_train's) is left in place, so call this before it."""
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


# ---------------------------------------------------------------------------------------------------- ESPnet


def adapted_task(base_task: type) -> type:
    """ESPnet task `base_task` (ASRTask, ASRTransducerTask, either S2TTask) whose models carry $ESPZOO_LORA's
    adapters."""
    for key, where in _TASKS.items():
        if where == (base_task.__module__, base_task.__name__):
            return __getattr__(f"Adapted{key}")
    raise AdapterError(f"LoRA is not available for ESPnet's {base_task.__module__}.{base_task.__name__} models; "
                       "fine-tune them without --lora.")


# By espzoo's name: ESPnet's module and class (both S2T tasks name their class S2TTask).
_TASKS = {
    "ASRTask": ("espnet2.tasks.asr", "ASRTask"),
    "ASRTransducerTask": ("espnet2.tasks.asr_transducer", "ASRTransducerTask"),
    "S2TTask": ("espnet2.tasks.s2t", "S2TTask"),
    "S2TCTCTask": ("espnet2.tasks.s2t_ctc", "S2TTask"),
}
_built: dict[str, type] = {}


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
        use_exact_averaging()  # in DDP's spawned workers too (rank 0's averages), which espzoo._asr_train misses
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
    from espzoo.model import build_model

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


# ---------------------------------------------------------------------------------------------------- files


def experiment_adapter(root: Path) -> AdapterConfig | None:
    """The adapter config of an experiment dir or adapter-only export, None for a plain model."""
    path = Path(root) / CONFIG_NAME
    return AdapterConfig.read(path) if path.is_file() else None


def write_weights(checkpoint: Path, adapter: AdapterConfig | None, model_file: Path, root: Path, mode: str) -> bool:
    """An export's weights: `merge` writes the plain merged model to `model_file`; `adapter-only` writes
    `root/adapter.pth` and `root/adapter_config.yaml` instead. Returns whether the model file was written."""
    from espzoo.bundle import load_state_dict

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
    from espzoo.bundle import load_state_dict, open_bundle
    from espzoo.hub import pull

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


# ---------------------------------------------------------------------------------------------------- continuing


def adapter_source(name: str, root: Path) -> Any:
    """An adapter-only export as a transfer source (espzoo.transfer.Source): its config, and a checkpoint that is
    the pinned base model with the adapter's full tensors on top (the adapted model without its adapters,
    written for this process), so the transfer plan sees the model the adapter was trained as. The adapter
    itself goes on in `continue_adapter`."""
    from espzoo.repo import meta_files
    from espzoo.transfer import Source, _read_config

    root = Path(root)
    meta = yaml.safe_load((root / "meta.yaml").read_text(encoding="utf-8")) if (root / "meta.yaml").is_file() else None
    named = meta_files(meta, str(root / "meta.yaml"))
    if not named.config or not (root / named.config).is_file():
        raise AdapterError(f"{root}/meta.yaml names no training config beside {ADAPTER_NAME}; re-export the adapter.")
    config = _read_config(root / named.config, relative_to=root)
    return Source(name, _materialized(root), config, adapter=root)


_MATERIALIZED: dict[tuple[str, int, int], Path] = {}


def _materialized(root: Path) -> Path:
    """base + the adapter's full tensors, written once per process (transfer opens a source more than once)
    under $ESPZOO_HOME/tmp and removed at exit."""
    import atexit
    import shutil
    import tempfile

    from espzoo.home import espzoo_home

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
    from espzoo.bundle import load_state_dict

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
    from espzoo.bundle import load_state_dict

    tensors = {k: v for k, v in load_state_dict(Path(root) / ADAPTER_NAME).items() if k.endswith(LORA_SUFFIXES)}
    layers = set(stored_ranks(tensors))
    if layers != set(summary.targets):
        missing = sorted(set(summary.targets) - layers) or sorted(layers - set(summary.targets))
        raise AdapterError(f"{root / ADAPTER_NAME} does not fit the layers its config targets ({', '.join(missing[:4])}"
                           "); re-export the adapter.")
    state = dict(load_state_dict(init_checkpoint))
    state.update({k: v.clone() for k, v in tensors.items()})
    atomic_write(Path(init_checkpoint), lambda tmp: torch.save(state, tmp))
