"""ESPnet ASR models built by ESPnet itself from a training config dict.

ESPnet's `ASRTask.build_model` is the only code that gives every architecture on the Hub the exact parameter
names its checkpoints use, so espzoo never builds models any other way. `target_shapes` builds on PyTorch's
meta device: every parameter has its shape and no storage, so a 1 GB model's shapes cost no memory; the few
modules that cannot be built there (torchaudio's HuBERT copies tensors while constructing) are built on the CPU.

Building is task-agnostic (`build_task_model(task class, config)`); the ASR task is the default. Every build
goes through `espzoo.models.upstreams`, so SSL front ends and Whisper are built from their architecture, never
downloaded, and an optional package that is missing is one sentence naming it (`MissingPackageError`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import difflib
import io
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from espzoo.errors import (
    MissingPackageError,
    ModelConfigError,  # also re-exported
)
from espzoo.models.espnet_env import task_class
from espzoo.models.upstreams import OPTIONAL_PACKAGES, missing_package_message
from espzoo.repo import parse_token_list
from espzoo.tasks import task_of

Device = Literal["cpu", "meta"]
Shapes = Mapping[str, tuple[int, ...]]


def training_args(config: dict[str, Any], task: Any = None) -> argparse.Namespace:
    """ESPnet's parsed training arguments for `config`: the parser's defaults, overlaid by the config's keys.

    This is what `asr_train.py --config config.yaml` does: the YAML's keys replace the parser's defaults
    (a `*_conf` dict replaces the default dict as a whole, it is not merged), and a string value goes through
    the option's type as argparse does with a string default (`decoder: none` is None, as in ESPnet).
    Keys the parser does not know (which ESPnet would refuse) are kept as given.
    """
    task = task or task_for_config(config)
    parser = task.get_parser()
    known = {action.dest for action in parser._actions} - {"config"}  # ESPnet ignores `config` in a config file
    parser.set_defaults(**{key: copy.deepcopy(value) for key, value in config.items() if key in known})
    refused = io.StringIO()
    try:
        with contextlib.redirect_stderr(refused):
            args = parser.parse_args([])
    except SystemExit as err:  # argparse exits on a value its type refuses, after printing why
        why = refused.getvalue().strip().splitlines()[-1:] or ["a value its option type refuses"]
        raise ModelConfigError(f"ESPnet's option parser refuses this config: {why[0]}.") from err
    for key, value in config.items():
        if key not in known:
            setattr(args, key, copy.deepcopy(value))
    from espzoo.models.compat import supported_init

    if not supported_init(getattr(args, "init", None)):  # `init: chainer` of an older release (espzoo.transfer)
        args.init = None
    if args.token_list is None:
        raise ModelConfigError("The config has no token_list; give the model's token list (inline or a file path).")
    return args


def unknown_options(config: Mapping[str, Any]) -> list[str]:
    """The config's keys the installed ESPnet's training parser does not have (options of another release, e.g.
    202402's `use_lora`): its trainer refuses a config file that names them."""
    task = task_for_config(config)
    known = {action.dest for action in task.get_parser()._actions}  # noqa: SLF001 (argparse keeps them there)
    return [key for key in config if key not in known and key not in _RUN_RECORDS]


# What ESPnet writes into every config.yaml beside its options (its version, the run's distributed setting and the
# required options' names): not options, and espzoo.train sets them again for each run.
_RUN_RECORDS = frozenset({"config", "version", "distributed", "required"})


def task_for_config(config: Mapping[str, Any]) -> Any:
    """The ESPnet task class that builds and trains the model of `config` (espzoo.tasks: one row per task)."""
    return task_class(task_of(config))


def build_model(config: dict[str, Any], *, device: Device = "cpu", reference: Shapes | None = None) -> Any:
    """Build the ESPnet ASR model (`ESPnetASRModel` or a subclass) that `config` describes.

    With `device="meta"` the parameters have shapes but no storage (no memory, no initialization cost);
    with `device="cpu"` they carry ESPnet's own initialization (seed torch first for a repeatable one).
    A model that cannot be built on the meta device is built on the CPU instead (same shapes, real memory).
    `reference`: the shapes of the checkpoint that will be loaded into it (upstreams such as Whisper or an SSL
    front end are then built with exactly those dimensions, never downloaded).
    """
    return build_task_model(task_for_config(config), config, device=device, reference=reference)


def build_task_model(
    task: Any, config: dict[str, Any], *, device: Device = "cpu", reference: Shapes | None = None
) -> Any:
    """`task.build_model` (an ESPnet AbsTask subclass) for `config`, offline, with errors as ModelConfigError."""
    args = training_args(config, task)
    _check_stats_file(args)
    try:
        return _build(task, args, device, reference)
    except (NotImplementedError, RuntimeError) as err:
        if device != "meta" or not meta_refusal(err):
            if isinstance(err, NotImplementedError):
                raise ModelConfigError(f"ESPnet cannot build a model from this config ({err}).") from err
            raise
        # Some modules copy tensors (torchaudio's HuBERT) or read values (the S4 decoder's `.item()`) while
        # being constructed, which the meta device cannot: the CPU build has the same shapes, in real memory.
        return _build(task, training_args(config, task), "cpu", reference)


def meta_refusal(err: Exception) -> bool:
    """Whether `err` is the meta device refusing an operation that needs data."""
    return isinstance(err, NotImplementedError) or "meta tensor" in str(err)


def _build(task: Any, args: argparse.Namespace, device: str, reference: Shapes | None) -> Any:
    import torch

    from espzoo.models.upstreams import offline_upstreams, upstreams_in

    try:
        with offline_upstreams(reference, upstreams_in(vars(args))), torch.device(device):
            return task.build_model(args)
    except ModelConfigError:
        raise  # espzoo's own sentence, from a build patch (espzoo.models.upstreams)
    except ModuleNotFoundError as err:
        raise MissingPackageError(missing_package_message(err.name or str(err))) from err
    except ImportError as err:  # ESPnet's own "You should install K2 to use ..." after a failed import
        named = [m for m in OPTIONAL_PACKAGES if re.search(rf"\b{re.escape(m)}\b", str(err), re.IGNORECASE)]
        if named:
            raise MissingPackageError(missing_package_message(named[0])) from err
        raise ModelConfigError(f"ESPnet cannot build this model here: {err}.") from err
    except RuntimeError as err:
        if type(err).__name__ != "UpstreamUnavailableError":  # models.s3prl's (not imported unless s3prl is used)
            raise
        raise ModelConfigError(str(err)) from err
    except (TypeError, KeyError, ValueError, AttributeError, AssertionError) as err:
        raise ModelConfigError(_build_failure(err, task)) from err


def _build_failure(err: Exception, task: Any = None) -> str:
    """One sentence for ESPnet refusing a config; an option or a class that this ESPnet lacks is named as such
    (the config was written by another ESPnet version, or it misspells an option ESPnet has)."""
    from importlib.metadata import version

    espnet = f"The installed ESPnet {version('espnet')}"
    unknown = re.search(r"(\w+)\.__init__\(\) got an unexpected keyword argument '(\w+)'", str(err))
    if isinstance(err, TypeError) and unknown:
        owner, option = unknown.groups()
        close = difflib.get_close_matches(option, _option_names(task, owner), n=1, cutoff=0.8)
        if close:
            return (f"{espnet} has no option {option!r} for {owner}, which this config sets: a misspelling of "
                    f"{close[0]!r}, which ESPnet itself refuses; correct it in the config.")
        return (f"{espnet} has no option {option!r} for {owner}, which this config sets; the "
                "model needs the ESPnet version it was trained with.")
    choice = re.search(r"--(\w+) must be one of .*: --\w+ (\S+)$", str(err))
    if isinstance(err, ValueError) and choice:
        return (f"{espnet} has no {choice.group(1)} {choice.group(2)!r}, which this config names; the model needs "
                "the ESPnet version it was trained with.")
    return f"ESPnet cannot build a model from this config ({type(err).__name__}: {err})."


def _option_names(task: Any, class_name: str) -> list[str]:
    """The constructor options of the class of that name among the task's choices (encoders, decoders, ...)."""
    import inspect

    for choices in getattr(task, "class_choices_list", None) or []:
        for cls in choices.classes.values():
            if cls.__name__ == class_name:
                return [name for name in inspect.signature(cls.__init__).parameters if name != "self"]
    return []


@dataclass(frozen=True)
class TargetModel:
    """What a transfer needs to know of the model a config describes, without its memory."""

    shapes: dict[str, tuple[int, ...]]  # every state-dict tensor, in state-dict order
    parameters: frozenset[str]  # the keys that are parameters (the rest are buffers, which never train)
    token_list: list[str]  # as the built model uses it (see model_token_list)
    # Vocabulary-sized tensors found in the model: key -> the axis that runs over the tokens.
    vocab_axes: dict[str, int] = field(default_factory=dict)
    # Keys naming a tensor that an earlier key already names (a module shared by two owners): key -> first key.
    aliases: dict[str, str] = field(default_factory=dict)
    # The model's own loader over a checkpoint's names: {checkpoint key: the model's key it fills, or None for one
    # it discards}, for the keys it renames or drops on load (loader_renames: names saved by older ESPnet releases).
    renames: Callable[[Shapes], dict[str, str | None]] = field(default=lambda shapes: {}, compare=False, repr=False)


def target_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor in the state dict of the model `config` describes (built on the meta device).

    A GlobalMVN stats file that does not exist yet (new stats, computed later by ESPnet's collect_stats) does not
    stop this: the normalization buffers then get the feature dimension the frontend produces.
    """
    return describe_target(config).shapes


def describe_target(config: dict[str, Any], reference: Shapes | None = None) -> TargetModel:
    """Shapes, parameter names, token list and vocabulary tensors of the model `config` describes (meta device)."""
    config = dict(config)
    missing_stats = _missing_stats_file(config)
    if missing_stats:
        config["normalize"] = None
        config["normalize_conf"] = {}
    model = build_model(config, device="meta", reference=reference)
    state = model.state_dict(keep_vars=True)
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    if missing_stats:
        dims = model.frontend.output_size() if model.frontend is not None else config["input_size"]
        shapes = {"normalize.mean": (dims,), "normalize.std": (dims,), **shapes}
    parameters = frozenset(name for name, _ in model.named_parameters(remove_duplicate=False))
    token_list = list(getattr(model, "token_list", None) or model_token_list(config))
    sizes = {len(token_list), len(model_token_list({**config, "model": None}))}
    return TargetModel(
        shapes=shapes,
        parameters=parameters,
        token_list=token_list,
        vocab_axes=vocabulary_axes(model, sizes),
        aliases=_aliases(state),
        renames=lambda checkpoint: loader_renames(model, checkpoint),
    )


def loader_renames(model: Any, checkpoint: Shapes) -> dict[str, str | None]:
    """{checkpoint key: the model's key that `model.load_state_dict` fills from it}, for every key the model's own
    loader renames (ESPnet 202611 accepts the names older releases saved, `encoder.embed.out.0.weight` for
    `encoder.embed.out.weight`, and renames them while loading).

    Generic, no table of names: it walks the modules as `torch.nn.Module.load_state_dict` does, calling each one's
    `_load_from_state_dict` (where its pre-hooks run, and where ESPnet overrides it to upgrade old names) over
    placeholders of the checkpoint's shapes on the meta device, and records which placeholder each of the model's
    own tensors is read from. Whatever renames a later ESPnet adds are picked up the same way. A key the loader
    drops on purpose (ESPnet's positional encodings discard the `pe` buffer releases before 0.5.3 saved) maps to
    None.
    """
    import logging
    import warnings

    import torch

    placeholders = {key: torch.empty(shape, device="meta") for key, shape in checkpoint.items()}
    origin = {id(value): key for key, value in placeholders.items()}
    own = set(model.state_dict(keep_vars=True))
    filled: dict[str, str] = {}

    class Reading(dict):  # type: ignore[type-arg]
        """A state dict that notes which placeholder the loader reads for each of the model's keys."""

        def __getitem__(self, key: str) -> Any:
            value = super().__getitem__(key)
            if key in own and id(value) in origin:
                filled[key] = origin[id(value)]
            return value

    dropped: set[str] = set()

    def visit(module: Any, local: dict[str, Any], prefix: str) -> None:
        reading = Reading(local)
        module._load_from_state_dict(reading, prefix, {}, True, [], [], [])  # noqa: SLF001 (as load_state_dict)
        kept = {id(value) for value in reading.values()}
        dropped.update(origin[id(v)] for v in local.values() if id(v) in origin and id(v) not in kept)
        for name, child in module._modules.items():  # noqa: SLF001
            if child is not None:
                inner = prefix + name + "."
                visit(child, {k: v for k, v in reading.items() if k.startswith(inner)}, inner)

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # ESPnet's renames log a warning each ("Rename: ..."): the plan says it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            visit(model, dict(placeholders), "")
    finally:
        logging.disable(previous)
    renamed: dict[str, str | None] = {source: key for key, source in filled.items() if source != key}
    return renamed | {key: None for key in dropped - set(filled.values())}


# Known vocabulary layer kinds, by the module's own name: output layers (tokens on the rows of the weight) and
# the self-conditioning input layer (CTC posteriors fed back: Linear(vocab, d), tokens on the weight's columns).
# They count only under these owners; an encoder's `embed` is its input subsampling, never vocabulary-sized.
_OUTPUT_LAYERS = frozenset({"ctc_lo", "output_layer", "output", "lin_out", "ctc_lin", "lm_lin"})
_INPUT_LAYERS = frozenset({"conditioning_layer"})
# (asr_transducer models hold their auxiliary CTC and LM outputs at the top: `ctc_lin`, `lm_lin`.)
# OWSM-CTC (espnet2/s2t/espnet_ctc_model.py) holds its prompt's token embedding at the top, as `embed`.
_VOCAB_OWNERS = ("ctc", "pit_ctc", "decoder", "joint_network", "encoder", "ctc_lin", "lm_lin", "embed")


def vocabulary_axes(model: Any, sizes: set[int]) -> dict[str, int]:
    """Every parameter of a known vocabulary layer whose token axis has one of `sizes`: key -> token axis.

    Layers: CTC `ctc_lo` (also under PIT-CTC's criterion), a decoder's embedding and output layer, a transducer
    joint network's output, the self-conditioning layer (tokens on the trailing axis of its weight).
    """
    import torch

    axes: dict[str, int] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        parts = name.split(".")
        if parts[0] not in _VOCAB_OWNERS:
            continue
        if isinstance(module, torch.nn.Embedding):
            # a decoder's (or OWSM-CTC's prompt) token embedding: tokens on the rows
            kind = "output" if parts[0] == "decoder" or name == "embed" else None
        elif isinstance(module, torch.nn.Linear) and parts[-1] in _OUTPUT_LAYERS and parts[0] != "encoder":
            kind = "output"
        elif isinstance(module, torch.nn.Linear) and parts[-1] in _INPUT_LAYERS:
            kind = "input"
        else:
            kind = None
        if kind is None:
            continue
        for pname, param in module.named_parameters(recurse=False):
            axis = 0 if kind == "output" else param.dim() - 1
            if kind == "input" and pname != "weight":
                continue  # its bias runs over the model dimension
            if param.dim() > axis and param.shape[axis] in sizes:
                axes[f"{name}.{pname}"] = axis
    return axes


def _aliases(state: dict[str, Any]) -> dict[str, str]:
    first: dict[int, str] = {}
    aliases = {}
    for key, value in state.items():
        owner = first.setdefault(id(value), key)
        if owner != key:
            aliases[key] = owner
    return aliases


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
    multi-blank transducer (`<blankD>` before `<blank>`, unless already there, as `ASRTask.build_model` does),
    plus the `<mask>` token a mask-CTC model appends (its decoder has that row; its CTC does not)."""
    token_list = config.get("token_list")
    if isinstance(token_list, (str, Path)):
        token_list = parse_token_list(Path(token_list).read_text(encoding="utf-8"), str(token_list))
    tokens = list(token_list or [])
    model_conf = config.get("model_conf") or {}
    durations = model_conf.get("transducer_multi_blank_durations")
    if durations:
        blank_idx = tokens.index(model_conf.get("sym_blank", "<blank>"))
        for duration in durations:
            if f"<blank{duration}>" not in tokens:
                tokens.insert(blank_idx, f"<blank{duration}>")
    if config.get("model") == "maskctc":
        tokens.append(model_conf.get("sym_mask", "<mask>"))
    return tokens
