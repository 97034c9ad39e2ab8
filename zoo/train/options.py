"""What a training run is given (TrainOptions) and what it reports, and the ESPnet config and command line
made of them.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from espzoo.data.sources import Dataset
from espzoo.decode import curves
from espzoo.errors import TrainError
from espzoo.models.s2t import extra_data_files
from espzoo.repo import config_sample_rate
from espzoo.transfer.vocab import Vocabulary
from espzoo.utils.fs import write_text
from espzoo.utils.yaml_io import load_yaml

# Keys of a pretrained model's training config that describe that run, not the model: dropped, then set
# again for this run (from TrainOptions, the data, OUT) or left at ESPnet's defaults.
RUN_KEYS = frozenset(
    """config print_config log_level drop_last_iter dry_run iterator_type valid_iterator_type output_dir ngpu seed
    num_workers num_att_plot dist_backend dist_init_method dist_world_size dist_rank local_rank dist_master_addr
    dist_master_port dist_launcher multiprocessing_distributed unused_parameters sharded_ddp use_deepspeed
    deepspeed_config gradient_as_bucket_view ddp_comm_hook cudnn_enabled cudnn_benchmark cudnn_deterministic
    use_tf32 collect_stats write_collected_feats max_epoch patience val_scheduler_criterion early_stopping_criterion
    best_model_criterion keep_nbest_models nbest_averaging_interval grad_clip grad_clip_type grad_noise accum_grad
    no_forward_run resume train_dtype use_amp log_interval use_matplotlib use_tensorboard
    create_graph_in_tensorboard use_wandb wandb_project wandb_id wandb_entity wandb_name wandb_model_log_interval
    detect_anomaly pretrain_path init_param ignore_init_mismatch num_iters_per_epoch batch_size valid_batch_size
    batch_bins valid_batch_bins train_shape_file valid_shape_file batch_type valid_batch_type fold_length
    sort_in_batch shuffle_within_batch sort_batch multiple_iterator train_data_path_and_name_and_type
    valid_data_path_and_name_and_type allow_variable_data_keys max_cache_size max_cache_fd valid_max_cache_size
    optim optim_conf scheduler scheduler_conf version distributed required token_list token_type bpemodel""".split()
)


CPU_BATCH_BINS = 1_000_000


GPU_BATCH_BINS = 16_000_000


STALL_S = 3600.0  # ESPnet's log silent this long: the training is taken as stalled (TrainOptions.stall_s)


@dataclass
class TrainOptions:
    """How to fine-tune. Every field has a fine-tuning default; `conf` overrides config keys last."""

    max_epoch: int = 20
    lr: float = 5e-4  # peak learning rate (after warmup)
    warmup_steps: int | None = None  # None: 10% of this run's optimizer steps, estimated from the data
    optim: str = "adam"
    weight_decay: float = 0.0
    batch_bins: int | None = None  # None: 1M on CPU, 16M per GPU (ESPnet's numel batches: samples + tokens*vocab)
    accum_grad: int = 1
    grad_clip: float = 5.0
    keep_nbest: int = 5  # checkpoints kept and averaged into model.pth
    best_model_criterion: tuple[str, str, str] | None = None  # None: (valid, acc, max); CTC-only: (valid, loss, min)
    patience: int | None = None  # early stopping after this many epochs without improvement
    ngpu: int = 0
    use_amp: bool = False  # mixed precision, GPU only
    num_workers: int | None = None  # None: 0 on 2 cores or fewer, else 2
    seed: int = 0
    resume: bool = False
    collect_stats: bool | None = None  # None: only when the config needs normalization stats it has not got
    num_nodes: int = 1  # machines in a multi-node run (see the module docstring)
    node_rank: int | None = None
    master_addr: str | None = None
    master_port: int | None = None
    dist_launcher: str | None = None  # "slurm" or "mpi": ranks come from the launcher
    stall_s: float | None = STALL_S  # stop when ESPnet's log stays silent this long (None: never)
    dist_backend: str | None = None  # None: nccl with GPUs, gloo on CPUs (ESPnet's own default is nccl)
    conf: list[str] = field(default_factory=list)  # "key=value" overrides, dotted keys: "encoder_conf.dropout_rate=0.2"
    adapters: str | None = None  # an adapter_config.yaml (espzoo.lora): train LoRA adapters on the frozen model
    # OUT/init/saved_names.json (espzoo.transfer.apply_plan): the averaged model is saved under the pretrained
    # checkpoint's tensor names, which every ESPnet release that loaded the pretrained model loads
    saved_names: str | None = None
    lr_groups: str | None = None  # OUT/init/lr_groups.json (espzoo.train.schedule): --lr-decay's per-parameter rates


@dataclass(frozen=True)
class EpochReport:
    """One finished epoch, parsed from ESPnet's `Nepoch results:` log line."""

    epoch: int
    max_epoch: int
    train: dict[str, Any]
    valid: dict[str, Any]
    elapsed_s: float  # since training started in this run
    eta_s: float | None  # to max_epoch, from this run's mean epoch time

    @property
    def loss(self) -> float | None:
        return _number(self.train.get("loss"))

    @property
    def valid_loss(self) -> float | None:
        return _number(self.valid.get("loss"))

    @property
    def valid_acc(self) -> float | None:
        return _number(self.valid.get("acc"))


@dataclass(frozen=True)
class TrainResult:
    out: Path
    model: Path  # OUT/model.pth
    config: Path  # OUT/config.yaml
    epochs: int  # the last finished epoch
    averaged: str  # which ESPnet checkpoint model.pth is (e.g. valid.acc.ave_5best.pth)
    normalize: str  # "pretrained", "collected" or "none": where the feature normalization stats came from
    history: list[EpochReport]  # the epochs finished in this run
    seconds: float
    seconds_to_first_step: float | None  # from run() until ESPnet started the first epoch
    notes: tuple[str, ...] = ()  # things the user should know (e.g. an incomplete epoch checkpoint left out)
    recipe: dict[str, Any] = field(default_factory=dict)  # what augmentation and schedule were on (train.recipe)


def default_batch_bins(options: TrainOptions) -> int:
    if options.batch_bins is not None:
        return options.batch_bins
    return GPU_BATCH_BINS * options.ngpu * options.num_nodes if options.ngpu > 0 else CPU_BATCH_BINS


def default_num_workers(options: TrainOptions) -> int:
    if options.num_workers is not None:
        return options.num_workers
    return 0 if (os.cpu_count() or 1) <= 2 else 2


def best_model_criterion(config: dict[str, Any], options: TrainOptions) -> list[list[str]]:
    """ESPnet's --best_model_criterion: accuracy needs the attention decoder (CTC-only models report none)."""
    if options.best_model_criterion is not None:
        return [list(options.best_model_criterion)]
    ctc_only = (config.get("model_conf") or {}).get("ctc_weight", 0.3) >= 1.0 or config.get("decoder") in (None, "none")
    return [["valid", "loss", "min"]] if ctc_only else [["valid", "acc", "max"]]


def write_train_config(
    base_config: dict[str, Any],
    *,
    vocabulary: Vocabulary,
    init_checkpoint: str | Path | None,
    stats_file: str | Path | None,
    options: TrainOptions,
    steps_per_epoch: int | None = None,
) -> dict[str, Any]:
    """The ESPnet training config: `base_config`'s architecture with the new vocabulary and this run's settings.

    `base_config` is a pretrained model's config with absolute paths (Bundle.resolved_config()). `stats_file`
    None with a global_mvn normalization means new statistics are collected (run() does it, then sets the
    path). `init_checkpoint` must hold exactly the new model's tensors (transfer.apply_plan writes it).
    """
    config = {k: copy.deepcopy(v) for k, v in base_config.items() if k not in RUN_KEYS}
    config["token_list"] = list(vocabulary.tokens)
    config["token_type"] = vocabulary.token_type
    bpemodel = vocabulary.bpemodel
    # A sentencepiece file gets an absolute path; a tokenizer name (Whisper's `whisper_multilingual`) stays.
    config["bpemodel"] = str(Path(bpemodel).resolve() if Path(bpemodel).is_file() else bpemodel) if bpemodel else None
    if config.get("normalize") == "global_mvn":
        normalize_conf = dict(config.get("normalize_conf") or {})
        normalize_conf["stats_file"] = str(Path(stats_file).resolve()) if stats_file else None
        config["normalize_conf"] = normalize_conf

    optim_conf = dict(base_config.get("optim_conf") or {}) if base_config.get("optim") == options.optim else {}
    optim_conf.update(lr=options.lr, weight_decay=options.weight_decay)
    config.update(
        optim=options.optim,
        optim_conf=optim_conf,
        scheduler="warmuplr",
        scheduler_conf={"warmup_steps": warmup_steps(options, steps_per_epoch)},
        max_epoch=options.max_epoch,
        patience=options.patience,
        batch_type="numel",
        batch_bins=default_batch_bins(options),
        accum_grad=options.accum_grad,
        grad_clip=options.grad_clip,
        # ESPnet averages only the 1 best when fewer epochs than keep_nbest_models exist: cap it.
        keep_nbest_models=keep_nbest_models(options),
        best_model_criterion=best_model_criterion(config, options),
        nbest_averaging_interval=0,
        seed=options.seed,
        num_workers=default_num_workers(options),
        use_amp=options.use_amp,
        use_preprocessor=True,
        init_param=[str(Path(init_checkpoint).resolve())] if init_checkpoint else [],
        ignore_init_mismatch=False,
    )
    for override in options.conf:
        apply_override(config, override)
    return config


def warmup_steps(options: TrainOptions, steps_per_epoch: int | None) -> int:
    """options.warmup_steps, else 10% of this run's optimizer steps (1 while the steps are not known)."""
    if options.warmup_steps is not None:
        return options.warmup_steps
    total = (steps_per_epoch or 0) * options.max_epoch // max(1, options.accum_grad)
    return max(1, round(0.1 * total)) if total else 1


def _with_warmup(config: dict[str, Any], options: TrainOptions, steps_per_epoch: int) -> dict[str, Any]:
    """`config` (write_train_config's, built before the steps were known) with the warmup it would have had with
    them: set where write_train_config set it, and an override that replaces it still wins."""
    overridden = {o.partition("=")[0].strip() for o in options.conf} & {"scheduler_conf", "scheduler_conf.warmup_steps"}
    if overridden:
        return config
    warmup = warmup_steps(options, steps_per_epoch)
    return dict(config, scheduler_conf={**config["scheduler_conf"], "warmup_steps": warmup})


def keep_nbest_models(options: TrainOptions) -> int:
    """ESPnet averages only the 1 best when fewer epochs than keep_nbest_models exist: cap it at max_epoch."""
    return max(1, min(options.keep_nbest, options.max_epoch))


def apply_override(config: dict[str, Any], override: str) -> None:
    """Set `key=value` in `config` (dotted keys reach into *_conf dicts; the value is parsed as YAML)."""
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise TrainError(f"Override {override!r} is not key=value; write e.g. optim_conf.lr=1e-4.")
    value = load_yaml(raw) if raw.strip() else None
    if isinstance(value, str):
        try:  # YAML 1.1 reads 1e-4 as a string
            value = float(value)
        except ValueError:
            pass
    *parents, leaf = key.strip().split(".")
    node = config
    for part in parents:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise TrainError(f"Override {override!r}: {part} is not a mapping in the config; check the key.")
        node = child
    node[leaf] = value


def needs_new_stats(config: dict[str, Any], options: TrainOptions) -> bool:
    if options.collect_stats is not None:
        return options.collect_stats and config.get("normalize") == "global_mvn"
    if config.get("normalize") != "global_mvn":
        return False
    stats = (config.get("normalize_conf") or {}).get("stats_file")
    return not stats or not Path(stats).is_file()


def text_shapes(dataset: Dataset, config: dict[str, Any], dest: Path) -> Path:
    """`text_shape.<token_type>` as asr.sh writes it ("utt tokens,vocab_size"), for batch_bins counting."""
    from espzoo.errors import VocabularyError
    from espzoo.transfer.vocab import tokenize

    token_type = config.get("token_type") or "char"
    transcripts = dataset.transcripts()
    ids = list(transcripts)
    try:
        lengths = [len(t) for t in tokenize([transcripts[i] for i in ids], token_type, config.get("bpemodel"))]
    except VocabularyError:  # phoneme tokens etc.: characters approximate the length well enough for batching
        lengths = [len(transcripts[i]) for i in ids]
    vocab_size = len(config["token_list"])
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"text_shape.{token_type}"
    write_text(path, "".join(f"{i} {max(1, n)},{vocab_size}\n" for i, n in zip(ids, lengths, strict=True)))
    return path


def estimate_steps_per_epoch(dataset: Dataset, text_shape: Path, batch_bins: int) -> int:
    """Batches per epoch as ESPnet's NumElementsBatchSampler makes them (sorted by length, padded bins).

    Under DDP each batch is split across the processes, so this is also the number of optimizer steps.
    """
    speech = _read_shape(dataset.speech_shape)
    text = _read_shape(text_shape)
    keys = sorted(speech, key=lambda k: speech[k][0])
    batches, current = 0, 0
    for i, key in enumerate(keys):
        current += 1
        bins = current * (speech[key][0] + text[key][0] * math.prod(text[key][1:]))
        if bins > batch_bins or i == len(keys) - 1:
            batches += 1
            current = 0
    return max(1, batches)


def _read_shape(path: Path) -> dict[str, list[int]]:
    shapes = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            key, value = line.split(maxsplit=1)
            shapes[key] = [int(x) for x in value.split(",")]
    return shapes


def node_rank(options: TrainOptions) -> int:
    """This machine's rank in a multi-node run (0 when there is one node), as ESPnet's launcher reads it."""
    if options.node_rank is not None:
        return options.node_rank
    if options.dist_launcher == "slurm":
        return int(os.environ.get("SLURM_NODEID") or os.environ.get("SLURM_PROCID") or 0)
    return 0


def node_workdir(out: str | Path, options: TrainOptions) -> Path:
    """Where this node writes what it prepares: OUT on node 0; on the others a scratch folder of their own
    (named after OUT), since only node 0 writes OUT (ESPnet's other ranks only read OUT/espnet on resume)."""
    out = Path(out).expanduser().resolve()
    rank = node_rank(options)
    if rank == 0:
        return out
    import hashlib
    import tempfile

    tag = hashlib.sha256(str(out).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"espzoo-node{rank}-{tag}"


def espnet_args(
    config_path: Path,
    *,
    train: Dataset,
    valid: Dataset,
    train_text_shape: Path,
    valid_text_shape: Path,
    output_dir: Path,
    options: TrainOptions,
) -> list[str]:
    """The `asr_train` arguments besides the config: data, shapes, output dir, devices (shared with bench/)."""
    args = ["--config", str(config_path), "--output_dir", str(output_dir)]
    for mode, data, text_shape in (("train", train, train_text_shape), ("valid", valid, valid_text_shape)):
        args += [f"--{mode}_data_path_and_name_and_type", f"{data.wav_scp},speech,sound"]
        args += [f"--{mode}_data_path_and_name_and_type", f"{data.text},text,text"]
        for entry in extra_data_files(data.dir):  # an S2T model's text_prev / text_ctc (espzoo.models.s2t)
            args += [f"--{mode}_data_path_and_name_and_type", entry]
        args += [f"--{mode}_shape_file", str(data.speech_shape), f"--{mode}_shape_file", str(text_shape)]
    args += [*curves.espnet_args(), "--use_wandb", "false"]  # ESPnet's plots and TensorBoard logs (decode.curves)
    args += ["--ngpu", str(options.ngpu)]
    if options.ngpu > 1 or options.num_nodes > 1 or options.dist_launcher:
        args += ["--multiprocessing_distributed", "true"]
        # ESPnet defaults to nccl, which has no CPU tensors; its DDP runs on CPUs with gloo (device_ids None).
        args += ["--dist_backend", options.dist_backend or ("nccl" if options.ngpu > 0 else "gloo")]
    if options.num_nodes > 1:
        args += ["--dist_world_size", str(options.num_nodes)]
        if options.node_rank is not None:
            args += ["--dist_rank", str(options.node_rank)]
        if options.master_addr:
            args += ["--dist_master_addr", options.master_addr]
        if options.master_port:
            args += ["--dist_master_port", str(options.master_port)]
    if options.dist_launcher:
        args += ["--dist_launcher", options.dist_launcher]
    return args


def check_options(options: TrainOptions) -> None:
    """Refuse options this machine cannot honour; cheap, so callers run it before any data or model work."""
    if options.use_amp and options.ngpu < 1:
        raise TrainError("use_amp (mixed precision) needs a GPU; set ngpu >= 1 or drop use_amp.")
    if options.ngpu > 0:
        import torch

        if torch.cuda.device_count() < options.ngpu:
            raise TrainError(
                f"ngpu={options.ngpu} but this machine has {torch.cuda.device_count()} usable GPU(s); "
                "lower ngpu (0 trains on the CPU)."
            )
    if options.max_epoch < 1:
        raise TrainError("max_epoch must be at least 1.")
    if options.num_nodes > 1 and not options.dist_launcher:
        missing = [f"--{k.replace('_', '-')}" for k in ("node_rank", "master_addr", "master_port")
                   if getattr(options, k) is None]
        if missing:
            raise TrainError(
                f"A {options.num_nodes}-node run needs {', '.join(missing)} on every node "
                "(the same master address and port everywhere, node ranks 0..N-1)."
            )
        if not 0 <= options.node_rank < options.num_nodes:  # type: ignore[operator]
            raise TrainError(f"node_rank {options.node_rank} is outside 0..{options.num_nodes - 1}.")


def _check_init(init: str | Path | None) -> None:
    if init is not None and not Path(init).is_file():
        raise TrainError(f"The init checkpoint {init} does not exist; write it with the transfer plan first.")
    if init is not None and ":" in str(Path(init).resolve()):
        raise TrainError(f"The init checkpoint path {init} holds ':', which ESPnet's --init_param splits on; move it.")


def _complete_zip(path: Path) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            zf.namelist()
        return True
    except (zipfile.BadZipFile, OSError):
        return False


def _check_sample_rate(config: dict[str, Any], train: Dataset, valid: Dataset) -> None:
    fs = config_sample_rate(config)  # the rate finetune prepared the data at: one rule for both
    for data in (train, valid):
        if data.sample_rate != fs:
            raise TrainError(
                f"The {data.name} set is at {data.sample_rate} Hz but the model expects {fs} Hz; "
                f"prepare it with sample_rate={fs}."
            )


def _normalize_source(config: dict[str, Any], out: Path) -> str:
    if config.get("normalize") != "global_mvn":
        return "none"
    stats = str((config.get("normalize_conf") or {}).get("stats_file") or "")
    return "collected" if stats.startswith(str(out / "stats")) else "pretrained"


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
