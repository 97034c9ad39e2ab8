"""The LoRA layer and putting it into a model: targets by pattern, adapters applied, merged back.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from espzoo.errors import AdapterError
from espzoo.lora.config import DEFAULT_SCOPES, LORA_SUFFIXES, AdapterConfig

# An attention or feed-forward block, by class or by attribute name (ESPnet's conformer, transformer,
# branchformer, e_branchformer, whisper and s3prl blocks all match one or the other).
_BLOCK_CLASS = re.compile(r"attention|feedforward", re.IGNORECASE)


_BLOCK_NAME = re.compile(r"^(self_attn|src_attn|attn|attention|feed_forward\w*|mlp|ffn)$")


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
