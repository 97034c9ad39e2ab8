"""Fine-tuning with ESPnet's own trainer: config, statistics, training, averaging, resume, DDP.

    from espzoo.trainer import TrainOptions, run

    result = run(
        bundle.resolved_config(), vocabulary=vocab, init_checkpoint="exp/bn_ft/init.pth",
        stats_file=bundle.stats_file, train=train_set, valid=dev_set, out="exp/bn_ft",
        options=TrainOptions(max_epoch=20), on_epoch=lambda r: print(r.epoch, r.valid.get("acc")),
    )
    print(result.model)   # exp/bn_ft/model.pth: the n-best average, loads strictly into the model of config.yaml

ESPnet trains: `run` writes the training config (the pretrained architecture, the new vocabulary, fine-tuning
optimization), runs `espnet2.bin.asr_train` in a subprocess (through `espzoo._asr_train`, which first checks
that the init checkpoint covers every tensor of the new model, then hands the same arguments to ESPnet), and
follows ESPnet's log (OUT/train.log) to report each epoch. The library never prints; give callbacks.
That process starts early (`warm_start`, which `run` and espzoo.finetune enter once OUT is locked): it imports
ESPnet, most of its start-up, while this one prepares, and gets its arguments by pipe once the config is written.
Before that it also takes calls (`in_standby`): espzoo.finetune has it plan and apply the transfer, which need
ESPnet's model classes and torch, so `espzoo finetune`'s own process imports neither.

Fine-tuning defaults (TrainOptions), each overridable, and `conf` overrides any config key (`optim_conf.lr=1e-4`):
  * Adam, peak lr 5e-4 with the warmuplr schedule (linear warmup, then inverse square root decay). ESPnet's
    conformer recipes peak at 1e-3..4e-3 after 15k-40k warmup steps from random weights; a pretrained model
    takes a quarter of that, and the warmup is 10% of this run's optimizer steps (a fixed 25k-step warmup
    would never reach the peak on a small fine-tuning set).
  * 20 epochs; `valid.acc` picks the best epochs (`valid.loss` for CTC-only models); the 5 best are averaged.
  * batch_bins 1M on CPU (about 60 s of 16 kHz audio a batch), 16M per GPU; 0 data workers on 2 cores.

The init checkpoint is passed as `--init_param PATH` without `--ignore_init_mismatch`, so ESPnet refuses any
shape mismatch, and `espzoo._asr_train` refuses a checkpoint that lacks tensors (ESPnet would leave them at
random silently). When new normalization statistics are collected, the checkpoint's `normalize.*` buffers
(the pretrained statistics) are excluded (`PATH:::normalize`), so the new ones are really used.

Stopping and resuming: Ctrl-C (SIGINT) or SIGTERM to this process waits until ESPnet is not writing its
checkpoint, then stops the training process group; `resume=True` continues from OUT/espnet/checkpoint.pth
(ESPnet's `--resume true`: model, optimizer, scheduler and reporter state of the last finished epoch).

One run at a time: OUT is locked (flock on OUT/.espzoo.lock) before anything is written, and the lock passes to
ESPnet's process, which dies with this one (a lifeline pipe: even a SIGKILLed espzoo leaves no trainer behind).
`resume=True` sets aside what a kill or a full disk cut off (an epoch checkpoint is left out of the average; a
cut-off checkpoint.pth restarts the run), and espzoo._asr_train loads checkpoint.pth weights_only before ESPnet
does. There is no time limit: a child whose log stays silent for `stall_s` is stopped as stalled.

Several GPUs, one machine: `ngpu=N` runs ESPnet's multiprocessing DDP (`--ngpu N
--multiprocessing_distributed true`), one process per GPU; batch_bins is the total over all GPUs.

Several machines: run the same call on every node with the same OUT on a shared file system and
`num_nodes=M`, `node_rank=0..M-1`, `master_addr=<node 0's address>`, `master_port=<a free port>` (ESPnet's
`--dist_world_size M --dist_rank R --dist_master_addr --dist_master_port`, env:// rendezvous); or, under
Slurm, `srun --nodes=M --ntasks-per-node=1 ...` with `dist_launcher="slurm"`, which reads the ranks from
Slurm. Each node runs `ngpu` processes; only node 0 writes checkpoints, so run `resume=True` the same way.
Only node 0 writes OUT: the other nodes prepare their inputs (data, vocabulary, init checkpoint, config) in a
scratch folder of their own (`node_workdir`) and their ESPnet only reads OUT/espnet (the checkpoint, on
resume). On CPUs (`ngpu=0`) the backend is gloo (`dist_backend`; ESPnet's default nccl needs GPUs): one
process per node, checked end to end on loopback in tests/test_distributed.py. When a node dies the others
stop within seconds (gloo sees the connection close) with `NodeLostError`.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from espzoo import _pipe, curves
from espzoo._fs import copy_file, no_room, replace_dir, write_text
from espzoo._hf import file_id
from espzoo._redact import redact
from espzoo.bundle import SAFE_DUMPER
from espzoo.data import Dataset
from espzoo.errors import TrainError, TrainInterrupted  # noqa: F401 (re-exported)
from espzoo.repo import best_checkpoint, config_criteria, config_sample_rate
from espzoo.s2t import config_task, extra_data_files, train_task_args
from espzoo.vocab import Vocabulary

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
STOP_GRACE_S = 30.0  # after SIGINT, how long ESPnet gets to exit before SIGTERM, then SIGKILL
STALL_S = 3600.0  # ESPnet's log silent this long: the training is taken as stalled (TrainOptions.stall_s)
LOCK_NAME = ".espzoo.lock"
PARENT_FD_ENV = "ESPZOO_PARENT_FD"  # the child's end of the lifeline pipe (see _start_child)
STANDBY = "--espzoo-standby"  # espzoo._asr_train imports ESPnet, then waits for its arguments (see warm_start)
GO_FD_ENV = "ESPZOO_GO_FD"  # the standby child's end of the pipe its calls and arguments come by
REPLY_FD_ENV = "ESPZOO_REPLY_FD"  # the standby child's end of the pipe its answers to calls go back by
REFUSAL = "espzoo: refusing to train: "  # how espzoo._asr_train starts the one line that says why it stopped
SAVE_WAIT_S = 120.0  # how long a stop waits for a checkpoint being written to be complete
POLL_S = 0.2


class OutInUse(TrainError):
    """Another espzoo run holds OUT's lock."""


class DiskFull(TrainError):
    """A write into OUT failed for lack of space (or a file size limit)."""


NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class NodeLostError(TrainError):
    """Another node or process of a distributed run died; this one stopped instead of waiting."""


_GLOO_EXIT_ABORT = "terminate called without an active exception"  # std::terminate in gloo's teardown at exit
# What torch.distributed raises in the survivors when a peer's connection drops (gloo on CPUs, NCCL on GPUs).
_PEER_LOST = re.compile(
    r"Connection closed by peer|Connection reset by peer|gloo.*Broken pipe|NCCL (?:communicator was aborted|error)"
)



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


# ---------------------------------------------------------------------------------------------------------
# The training config


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
    value = yaml.safe_load(raw) if raw.strip() else None
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


# ---------------------------------------------------------------------------------------------------------
# Shapes, ESPnet's command line


def text_shapes(dataset: Dataset, config: dict[str, Any], dest: Path) -> Path:
    """`text_shape.<token_type>` as asr.sh writes it ("utt tokens,vocab_size"), for batch_bins counting."""
    from espzoo.vocab import VocabularyError, tokenize

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
        for entry in extra_data_files(data.dir):  # an S2T model's text_prev / text_ctc (espzoo.s2t)
            args += [f"--{mode}_data_path_and_name_and_type", entry]
        args += [f"--{mode}_shape_file", str(data.speech_shape), f"--{mode}_shape_file", str(text_shape)]
    args += [*curves.espnet_args(), "--use_wandb", "false"]  # ESPnet's plots and TensorBoard logs (espzoo.curves)
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


# ---------------------------------------------------------------------------------------------------------
# Following ESPnet's log

_RESULTS = re.compile(r"\b(\d+)epoch results: (.*)$")
_STARTED = re.compile(r"\b(\d+)/(\d+)epoch started")
_SECTION = re.compile(r"\[(\w+)\] ")
_VALUE = re.compile(r"(\w+)=(.*?)(?=, \w+=|$)")
_SAVED = ("The best model has been updated", "There are no improvements in this epoch")


def parse_results_line(line: str) -> tuple[int, dict[str, dict[str, Any]]] | None:
    """(epoch, {"train": {...}, "valid": {...}}) from ESPnet's `Nepoch results: [train] k=v, ... [valid] ...`."""
    match = _RESULTS.search(line.rstrip())
    if match is None:
        return None
    sections: dict[str, dict[str, Any]] = {}
    parts = _SECTION.split(match.group(2))
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        values: dict[str, Any] = {}
        for key, raw in _VALUE.findall(body.strip().rstrip(",")):
            number = _number(raw)
            values[key] = raw.strip() if number is None else number
        sections[name] = values
    return int(match.group(1)), sections


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@dataclass
class _LogFollower:
    """Reads lines ESPnet appends to train.log and turns them into progress."""

    path: Path
    offset: int
    on_epoch: Callable[[EpochReport], None] | None
    started_at: float
    first_step_at: float | None = None
    first_epoch: int | None = None
    max_epoch: int = 0
    last_epoch: int = 0
    saving: bool = False  # between "epoch results" and the line that follows the checkpoint save
    history: list[EpochReport] = field(default_factory=list)
    _partial: str = ""

    def poll(self) -> bool:
        """Read what ESPnet appended; whether there was anything."""
        with self.path.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        if not chunk:
            return False
        self.offset += len(chunk)
        text = self._partial + chunk.decode("utf-8", errors="replace")
        *lines, self._partial = text.split("\n")
        for line in lines:
            self.feed(line)
        return True

    def feed(self, line: str) -> None:
        started = _STARTED.search(line)
        if started:
            epoch, self.max_epoch = int(started.group(1)), int(started.group(2))
            if self.first_step_at is None:
                self.first_step_at, self.first_epoch = time.monotonic(), epoch
            return
        results = parse_results_line(line)
        if results:
            epoch, sections = results
            self.saving, self.last_epoch = True, epoch
            elapsed = time.monotonic() - (self.first_step_at or self.started_at)
            done = epoch - (self.first_epoch or epoch) + 1
            eta = elapsed / done * max(0, self.max_epoch - epoch) if done > 0 else None
            report = EpochReport(
                epoch, self.max_epoch, sections.get("train", {}), sections.get("valid", {}), elapsed, eta
            )
            self.history.append(report)
            if self.on_epoch is not None:
                self.on_epoch(report)
            return
        if any(marker in line for marker in _SAVED):
            self.saving = False

    def tail(self, lines: int = 15) -> str:
        with self.path.open("rb") as f:
            f.seek(max(0, self.path.stat().st_size - 20000))
            return "\n".join(f.read().decode("utf-8", errors="replace").splitlines()[-lines:])


# ---------------------------------------------------------------------------------------------------------
# run


@dataclass(frozen=True)
class _Job:
    """What run() was asked to do, as one value for the steps after its checks."""

    base_config: dict[str, Any]
    vocabulary: Vocabulary
    init_checkpoint: str | Path | None
    stats_file: str | Path | None
    train: Dataset
    valid: Dataset
    out: Path
    options: TrainOptions
    plan: Any = None
    provenance: dict[str, Any] | None = None

    def train_config(self) -> dict[str, Any]:
        """write_train_config's config, before the steps per epoch are known (see _with_warmup)."""
        return write_train_config(
            self.base_config, vocabulary=self.vocabulary, init_checkpoint=self.init_checkpoint,
            stats_file=self.stats_file, options=self.options,
        )


def run(
    base_config: dict[str, Any],
    *,
    vocabulary: Vocabulary,
    init_checkpoint: str | Path | None,
    stats_file: str | Path | None,
    train: Dataset,
    valid: Dataset,
    out: str | Path,
    options: TrainOptions | None = None,
    plan: Any = None,
    provenance: dict[str, Any] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> TrainResult:
    """Fine-tune: write OUT/conf/train.yaml, collect stats if needed, train with ESPnet, assemble OUT.

    OUT then holds config.yaml (paths relative to OUT), model.pth (the n-best average), tokens.txt, bpe.model,
    feats_stats.npz, plan.json (when `plan` is given), provenance.json, train.log and ESPnet's exp dir espnet/.
    `on_stage` hears "stats", "train", "average", "done"; `on_epoch` gets each finished epoch.
    With `options.resume`, a previous run in OUT continues from its last finished epoch (its config is kept;
    a new max_epoch extends it); without a previous run it starts afresh.
    """
    job = _Job(base_config, vocabulary, init_checkpoint, stats_file, train, valid, Path(out).expanduser().resolve(),
               options or TrainOptions(), plan, provenance)
    check_options(job.options)
    if train.name == valid.name:
        raise TrainError(f"The train and valid sets are both named {train.name!r}; prepare them under two names.")
    config = None
    if not (job.options.resume and (job.out / "conf" / "train.yaml").is_file()):  # refusals before the lock
        _check_init(init_checkpoint)
        config = job.train_config()
        _check_sample_rate(config, train, valid)
    with lock_out(job.out, job.options), warm_start(job.out), disk_full_is_one_sentence(job.out):
        return _run(job, config, on_epoch, on_stage)


def _run(
    job: _Job,
    config: dict[str, Any] | None,
    on_epoch: Callable[[EpochReport], None] | None,
    on_stage: Callable[[str], None] | None,
) -> TrainResult:
    started = time.monotonic()
    stage = on_stage or (lambda _: None)
    out, options, train, valid = job.out, job.options, job.train, job.valid
    work = node_workdir(out, options)  # OUT, or on nodes other than 0 their own scratch folder
    conf_path = work / "conf" / "train.yaml"
    resuming = options.resume and conf_path.is_file()
    if work == out:  # what OUT holds is node 0's to check: the other nodes start while it is already writing there
        check_out_dir(out, options)
    notes = _set_aside_incomplete(out / "espnet") if resuming and work == out else []

    if resuming:
        config = yaml.safe_load(conf_path.read_text(encoding="utf-8"))
        if config.get("max_epoch") != options.max_epoch:
            config["max_epoch"] = options.max_epoch
            # The cap on the n-best average follows the new max_epoch (1 epoch, then resumed to 20, averages 5).
            config["keep_nbest_models"] = keep_nbest_models(options)
            write_text(conf_path, yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
        normalize = _normalize_source(config, work)
    elif config is None:  # another node: node 0's OUT has a config to resume, this node's scratch folder has not
        config = job.train_config()
    work.mkdir(parents=True, exist_ok=True)
    shapes = {d.name: text_shapes(d, config, work / "shapes" / d.name) for d in (train, valid)}
    if not resuming:
        steps = estimate_steps_per_epoch(train, shapes[train.name], config["batch_bins"])
        config = _with_warmup(config, options, steps)
        normalize = "none"
        if needs_new_stats(config, options):
            stage("stats")
            config["normalize_conf"]["stats_file"] = str(
                _collect_stats(config, train, valid, shapes, work, options) / "train" / "feats_stats.npz"
            )
            # The checkpoint's normalize.* buffers hold the pretrained statistics: keep the new ones.
            config["init_param"] = [f"{p}:::normalize" for p in config["init_param"]]
            normalize = "collected"
        elif config.get("normalize") == "global_mvn":
            normalize = "pretrained"
        # On the way to the first step: libyaml's dumper writes the same text (50k tokens: 0.3 s instead of 1.1 s).
        write_text(conf_path, yaml.dump(config, Dumper=SAFE_DUMPER, allow_unicode=True, sort_keys=False))

    args = train_task_args(config_task(config)) + espnet_args(
        conf_path,
        train=train,
        valid=valid,
        train_text_shape=shapes[train.name],
        valid_text_shape=shapes[valid.name],
        output_dir=out / "espnet",
        options=options,
    )
    args += ["--resume", "true" if options.resume else "false"]
    if options.adapters:
        args += ["--espzoo_lora", str(Path(options.adapters).resolve())]  # read by espzoo._asr_train
    if options.saved_names:
        args += ["--espzoo_saved_names", str(Path(options.saved_names).resolve())]  # read by espzoo._asr_train
    stage("train")
    follower = _train(args, work, on_epoch, started, resuming, options.stall_s, secondary=work != out)
    if work != out:  # another node: node 0 averages and writes OUT
        stage("done")
        return _secondary_result(out, follower, normalize, started)

    stage("average")
    result = _assemble(out, config, train, valid, options, follower, normalize, job.plan, job.provenance, started)
    stage("done")
    return replace(result, notes=tuple(notes))


# ---------------------------------------------------------------------------------------------------------
# OUT: one run at a time, and what a run can trust in it


_held_locks: dict[str, int] = {}  # OUT -> the open lock file, while this process holds it (the lock is re-entrant)


@contextlib.contextmanager
def lock_out(out: str | Path, options: TrainOptions | None = None) -> Iterator[None]:
    """Hold an exclusive lock on OUT (OUT/.espzoo.lock, flock) for the block; the first thing a run does, before it
    writes anything, so a second run on the same OUT is refused and touches nothing.

    Nodes other than rank 0 of a multi-node run share rank 0's OUT and do not lock it. The lock file is handed to
    the training child too, so the lock lasts until ESPnet is gone, not only this process."""
    out = Path(out).expanduser().resolve()
    key = str(out)
    if key in _held_locks or node_rank(options or TrainOptions()) != 0:
        yield
        return
    if out.exists() and not out.is_dir():
        raise TrainError(f"{out} is a file, not a folder; choose another out dir.")
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        who = f" (pid {holder})" if holder.isdigit() else ""
        raise OutInUse(
            f"{out} is in use by another espzoo run{who}; wait for it to finish, or choose another out dir."
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held_locks[key] = fd
    try:
        yield
    finally:
        del _held_locks[key]
        os.close(fd)


def check_out_dir(out: str | Path, options: TrainOptions) -> None:
    """Refuse an OUT that this run must not write into (a finished model, an unfinished training without resume,
    a cut-off checkpoint.pth); cheap, so callers run it under the lock before writing data or checkpoints."""
    out = Path(out).expanduser().resolve()
    if options.resume and (out / "conf" / "train.yaml").is_file():
        return  # what a resume finds cut off is set aside by _set_aside_incomplete
    if (out / "model.pth").exists():
        raise TrainError(
            f"{out} already holds a trained model (model.pth); pass resume=True (--resume) to train it for more "
            "epochs, or choose another out dir."
        )
    if (out / "espnet" / "checkpoint.pth").exists() or (out / "conf" / "train.yaml").exists():
        raise TrainError(
            f"{out} holds an unfinished training; pass resume=True (--resume) to continue it, "
            "or choose another out dir."
        )


def _set_aside_incomplete(espnet_dir: Path) -> list[str]:
    """What a killed or disk-full training left cut off, set aside so that --resume can go on (the notes say what).

    A cut-off checkpoint.pth holds no usable training state: the whole run moves to espnet.incomplete-N and
    training restarts from epoch 1 (the init checkpoint and config are kept). A cut-off Nepoch.pth is renamed
    to *.incomplete: ESPnet's averaging then leaves it out (espzoo._asr_train skips epochs without a file)."""
    checkpoint = espnet_dir / "checkpoint.pth"
    if checkpoint.exists() and not _complete_zip(checkpoint):
        with open(checkpoint, "rb") as f:
            head = f.read(4)
        if head and not head.startswith(b"PK"):  # no zip at all (a cut-off one starts as one): not ESPnet's
            kind = "a legacy-format pickle" if head[:1] == b"\x80" else "no zip file"
            raise TrainError(
                f"{checkpoint} is {kind}, not the zip file torch and ESPnet write, so it was neither loaded nor "
                "set aside as cut off; if you did not put it there, others can write to this out dir: start afresh "
                "in a new one you alone can write to."
            )
        n = 1
        while espnet_dir.with_name(f"{espnet_dir.name}.incomplete-{n}").exists():
            n += 1
        aside = espnet_dir.rename(espnet_dir.with_name(f"{espnet_dir.name}.incomplete-{n}"))
        return [f"{checkpoint} was cut off while being written (the training was killed, or the disk was full), "
                f"so training restarts from epoch 1; the cut-off run is kept in {aside}."]
    notes = []
    for path in sorted(espnet_dir.glob("*epoch.pth")):
        if path.name[0].isdigit() and not path.is_symlink() and not _complete_zip(path):
            path.rename(path.with_name(path.name + ".incomplete"))
            notes.append(
                f"{path} was cut off while being written (a full disk?); it is left out of the averaged model "
                f"(kept as {path.name}.incomplete)."
            )
    return notes


@contextlib.contextmanager
def disk_full_is_one_sentence(out: Path) -> Iterator[None]:
    try:
        yield
    except OSError as err:
        if err.errno not in NO_SPACE:
            raise
        where = err.filename or out
        raise DiskFull(
            f"no room to write {where} ({os.strerror(err.errno)}); free space (or raise the file size limit) and "
            "run the same command again with --resume."
        ) from None


def _secondary_result(out: Path, follower: _LogFollower, normalize: str, started: float) -> TrainResult:
    return TrainResult(
        out=out,
        model=out / "model.pth",
        config=out / "config.yaml",
        epochs=follower.last_epoch,
        averaged="",  # node 0's to say
        normalize=normalize,
        history=follower.history,
        seconds=time.monotonic() - started,
        seconds_to_first_step=(follower.first_step_at - started) if follower.first_step_at else None,
    )


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


def _child_command(module: str, args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _collect_stats(
    config: dict[str, Any], train: Dataset, valid: Dataset, shapes: dict[str, Path], out: Path, options: TrainOptions
) -> Path:
    """ESPnet's collect_stats (asr.sh stage 10) into OUT/stats, written under a temporary name first."""
    stats_dir = out / "stats"
    tmp = out / ".stats.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    stats_config = dict(config, normalize=None, normalize_conf={}, init_param=[])
    conf_path = tmp / "collect_stats.yaml"
    write_text(conf_path, yaml.safe_dump(stats_config, allow_unicode=True, sort_keys=False))
    args = espnet_args(
        conf_path,
        train=train,
        valid=valid,
        train_text_shape=shapes[train.name],
        valid_text_shape=shapes[valid.name],
        output_dir=tmp,
        options=TrainOptions(ngpu=min(options.ngpu, 1)),
    )
    args += ["--collect_stats", "true"]
    log = out / "collect_stats.log"
    with log.open("wb") as f:
        follower = _LogFollower(log, 0, None, time.monotonic())
        done = _supervise(_start_child(args, f), follower, options.stall_s)
    if done != 0 or not (tmp / "train" / "feats_stats.npz").is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        raise _child_failed("collect_stats", done, log, follower)
    return replace_dir(tmp, stats_dir)


def _popen_kwargs(log_file: Any) -> dict[str, Any]:
    from espzoo._espnet import espnet_env

    env = espnet_env()
    env.setdefault("PYTHONUNBUFFERED", "1")
    # A new session: the terminal's Ctrl-C reaches only us, and we stop ESPnet at a safe moment.
    return {"stdout": log_file, "stderr": subprocess.STDOUT, "env": env, "start_new_session": True}


def _start_child(args: list[str], log_file: Any) -> subprocess.Popen:
    """`python -m espzoo._asr_train ARGS` (ESPnet's asr_train after espzoo's checks), tied to this process's life;
    the one warm_start started for the same output dir when there is one (it has imported ESPnet already).

    The child gets the read end of a pipe whose write end only this process holds: when this process dies, even
    by SIGKILL, the child reads EOF and kills its process group (ESPnet and its workers), so no trainer is left
    running unseen, writing into OUT. It also inherits OUT's lock, which therefore lasts as long as it does."""
    output_dir = args[args.index("--output_dir") + 1] if "--output_dir" in args else None
    waiting = _standby.pop(output_dir, None) if output_dir else None
    if waiting is not None and _go(waiting, args, Path(log_file.name)):
        return waiting
    return _spawn(args, log_file)


def _spawn(args: list[str], stdout: Any, *, standby: bool = False) -> subprocess.Popen:
    read, write = os.pipe()
    go_read, go_write = os.pipe() if standby else (-1, -1)
    reply_read, reply_write = os.pipe() if standby else (-1, -1)
    kwargs = _popen_kwargs(stdout)
    kwargs["env"][PARENT_FD_ENV] = str(read)
    if standby:
        kwargs["env"][GO_FD_ENV] = str(go_read)
        kwargs["env"][REPLY_FD_ENV] = str(reply_write)
    try:
        proc = subprocess.Popen(
            _child_command("espzoo._asr_train", args),
            pass_fds=(read, *((go_read, reply_write) if standby else ()), *_held_locks.values()),
            **kwargs,
        )
    except BaseException:
        for fd in (write, go_write, reply_read):
            if fd >= 0:
                os.close(fd)
        raise
    finally:
        for fd in (read, go_read, reply_write):  # the child's ends: a reply pipe then reads EOF once the child dies
            if fd >= 0:
                os.close(fd)
    proc.lifeline = write  # type: ignore[attr-defined]  # closed by _supervise once the child is gone
    proc.go = go_write  # type: ignore[attr-defined]  # a standby child's calls and arguments go here (_ask, _go)
    proc.reply = reply_read  # type: ignore[attr-defined]  # and its answers to calls come back here (_ask)
    proc.early = stdout if standby else None  # type: ignore[attr-defined]  # what it printed before it had a log
    return proc


_standby: dict[str, subprocess.Popen] = {}  # ESPnet's output dir -> its training child, started early and waiting


@contextlib.contextmanager
def warm_start(out: str | Path) -> Iterator[None]:
    """Start OUT's training child now, so that it imports ESPnet (about 8 s on an idle core, far more on a busy
    machine) while this process checks the data, plans the transfer and writes the config, instead of after;
    run() then sends it its arguments. Hold OUT's lock first (the child inherits it, as every training child
    does). A child the block did not use (an error, a dry run, Ctrl-C) is stopped when it ends."""
    import tempfile

    output_dir = str(Path(out).expanduser().resolve() / "espnet")
    if output_dir in _standby:  # finetune() started it; run() inside it uses the same one
        yield
        return
    early = tempfile.TemporaryFile()  # unlinked: nothing is written into OUT before run() gets that far
    try:
        # The output dir on its command line only says, in `ps`, whose trainer it is: the arguments come by pipe.
        _standby[output_dir] = _spawn([STANDBY, "--output_dir", output_dir], early, standby=True)
    except BaseException:
        early.close()
        raise
    try:
        yield
    finally:
        unused = _standby.pop(output_dir, None)
        if unused is not None:
            _discard(unused)


def in_standby(out: str | Path, function: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """`function(*args, **kwargs)`, run in OUT's standby training child (see warm_start) when there is one: it has
    imported ESPnet (or is importing it), so espzoo.finetune plans and applies the transfer there and this process
    never imports ESPnet itself. An EspzooError or OSError raised there is raised here as it is (the same class and
    sentence; a full disk is then one sentence here too).
    In this process when there is no such child, or it died, or it failed otherwise (a bug: here it fails the same
    way, with its traceback). `function` must be importable by name; arguments and result travel pickled between
    this process and its own child, never from anywhere else."""
    proc = _standby.get(str(Path(out).expanduser().resolve() / "espnet"))
    answer = _ask(proc, (function, args, kwargs)) if proc is not None else None
    if answer is not None and answer[0] == "ok":
        return answer[1]
    if answer is not None and answer[0] == "error":
        raise answer[1]
    return function(*args, **kwargs)


def _ask(proc: subprocess.Popen, call: tuple[Any, ...]) -> tuple[str, Any] | None:
    """Send a standby child one call and read its answer: ("ok", value), ("error", EspzooError) or ("bug", why);
    None if the child is gone (then it is stopped and forgotten: training starts a fresh one)."""
    try:
        _send(proc, ("call", call))
        answer = _pipe.receive(proc.reply)  # type: ignore[attr-defined]
    except OSError:  # it died (out of memory, say)
        answer = None
    except Exception as err:  # noqa: BLE001 - the call or the answer does not pickle: both ends are still in step
        return "bug", repr(err)
    except BaseException:  # Ctrl-C while it works: a half-sent call or a half-read answer leaves it unusable
        _forget(proc)
        raise
    if answer is None:
        _forget(proc)
    return answer


def _forget(proc: subprocess.Popen) -> None:
    for key, waiting in list(_standby.items()):
        if waiting is proc:
            del _standby[key]
    _discard(proc)


def _send(proc: subprocess.Popen, message: Any) -> None:
    if proc.poll() is not None:
        raise BrokenPipeError
    _pipe.send(proc.go, message)  # type: ignore[attr-defined]


def _go(proc: subprocess.Popen, args: list[str], log: Path) -> bool:
    """Send a standby child its arguments and log; False (and the child stopped) if it is no longer there."""
    try:
        _send(proc, ("train", {"argv": args, "log": str(log)}))
    except OSError:  # it died (its imports failed, say): a child started afresh says why in the log
        _discard(proc)
        return False
    except BaseException:  # Ctrl-C while a long message waits: no longer in _standby, so warm_start won't stop it
        _discard(proc)
        raise
    for name in ("go", "reply"):  # EOF on its pipe: no more calls
        os.close(getattr(proc, name))
        setattr(proc, name, -1)
    return True


def _discard(proc: subprocess.Popen) -> None:
    """Stop a standby child that will not train (it has only imported): at once, with its process group."""
    for name in ("go", "reply", "lifeline"):
        fd = getattr(proc, name, -1)
        if fd is not None and fd >= 0:
            os.close(fd)
            setattr(proc, name, None if name == "lifeline" else -1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if getattr(proc, "early", None) is not None:
        proc.early.close()  # type: ignore[attr-defined]


def _keep_early_output(proc: subprocess.Popen, log: Path) -> None:
    """What a standby child printed before it had its log (it empties that file once it has copied it there):
    left over only when it died first (a broken ESPnet install, say), then it belongs in the log for the error."""
    early = getattr(proc, "early", None)
    if early is None:
        return
    early.seek(0)
    text = early.read()
    early.close()
    proc.early = None  # type: ignore[attr-defined]
    if text:
        with log.open("ab") as f:
            f.write(text)


def _train(
    args: list[str],
    out: Path,
    on_epoch: Callable[[EpochReport], None] | None,
    started: float,
    resuming: bool,
    stall_s: float | None,
    secondary: bool = False,
) -> _LogFollower:
    log = out / "train.log"
    with log.open("ab") as f:
        what = "resuming" if resuming else "starting"
        f.write(f"# espzoo: {what} ESPnet training at {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        offset = f.tell()
        proc = _start_child(args, f)
    follower = _LogFollower(log, offset, on_epoch, started)
    try:
        code = _supervise(proc, follower, stall_s)
    finally:
        _keep_early_output(proc, log)
    follower.poll()
    if code != 0 and _PEER_LOST.search(follower.tail(40)):
        done = f"after epoch {follower.last_epoch}" if follower.last_epoch else "before the first epoch finished"
        raise NodeLostError(
            f"Another process of this distributed run stopped {done}, so this one cannot go on (the full log is "
            f"{log}); fix that node, then start every node again with --resume."
        )
    if secondary and code == -signal.SIGABRT and _GLOO_EXIT_ABORT in follower.tail(3):
        # gloo's teardown in a rank other than 0 can abort at process exit, after the last collective; whether the
        # run finished is node 0's to say (it averages and writes OUT, and fails itself if a peer was lost).
        return follower
    if code != 0:
        raise _child_failed("training", code, log, follower)
    return follower


def _child_failed(what: str, code: int, log: Path, follower: _LogFollower) -> TrainError:
    """One sentence when espzoo's check or a full disk stopped ESPnet; else the log's last lines."""
    tail = follower.tail(40)
    for line in reversed(tail.splitlines()):
        if line.startswith(REFUSAL):
            return TrainError(line[len(REFUSAL):].strip())
    short_write = "PytorchStreamWriter failed" in tail or "unexpected pos" in tail  # torch.save's way to say it
    if any(m in tail for m in ("No space left on device", "Disk quota exceeded", "File too large")) or (
        short_write and (no_room(log.parent, slack=64 << 20) or _file_size_limited())
    ):
        return DiskFull(
            f"ESPnet's {what} ran out of disk space writing into {log.parent}; free space and run the same "
            f"command again with --resume (the full log is {log})."
        )
    last = "\n".join(tail.splitlines()[-15:])
    return TrainError(f"ESPnet's {what} failed (exit {code}); the full log is {log}. Its last lines:\n{last}")


def _file_size_limited() -> bool:
    import resource

    return resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY


class _Stop(Exception):
    pass


def _supervise(proc: subprocess.Popen, follower: _LogFollower | None, stall_s: float | None = None) -> int:
    """Wait for the child, feeding the log follower; on Ctrl-C/SIGTERM stop it cleanly and raise. A child whose
    log stays silent for stall_s is stopped as stalled: no fixed limit on how long training may take."""
    previous = None
    if _in_main_thread():

        def _on_term(signum: int, frame: Any) -> None:
            raise _Stop()

        previous = signal.signal(signal.SIGTERM, _on_term)
    try:
        heard = time.monotonic()
        while proc.poll() is None:
            if follower is not None and follower.poll():
                heard = time.monotonic()
            if stall_s is not None and time.monotonic() - heard > stall_s:
                epoch = _stop(proc, follower)
                log = follower.path if follower is not None else "its log"
                raise TrainError(
                    f"ESPnet wrote nothing to {log} for {_duration(stall_s)} and looks stalled, so it was "
                    f"stopped{f' after epoch {epoch}' if epoch else ''}; continue with --resume (raise "
                    "--stall-minutes if its steps are really that slow)."
                )
            time.sleep(POLL_S)
        return proc.returncode
    except (KeyboardInterrupt, _Stop):
        epoch = _stop(proc, follower)
        done = f" after epoch {epoch}" if epoch else " before the first epoch finished"
        raise TrainInterrupted(
            f"Training stopped{done}; continue it with resume=True (--resume) and the same out dir."
        ) from None
    except BaseException:
        _stop(proc, follower)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        lifeline = getattr(proc, "lifeline", None)
        if lifeline is not None and proc.poll() is not None:
            os.close(lifeline)
            proc.lifeline = None  # type: ignore[attr-defined]


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} minutes" if seconds >= 120 else f"{seconds:.0f} seconds"


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _stop(proc: subprocess.Popen, follower: _LogFollower | None) -> int:
    """Stop the child's process group, never while it writes checkpoint.pth. Returns the last finished epoch."""
    deadline = time.monotonic() + SAVE_WAIT_S
    while follower is not None and proc.poll() is None and time.monotonic() < deadline:
        follower.poll()
        if not follower.saving:
            break
        time.sleep(POLL_S)
    # The whole group: DataLoader workers and DDP processes must not outlive the stop (even if the main one exits).
    for sig, grace in ((signal.SIGINT, STOP_GRACE_S), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        if not _group_alive(proc):
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while _group_alive(proc) and time.monotonic() < deadline:
            time.sleep(0.05)
    if follower is not None:
        follower.poll()
        return follower.last_epoch
    return 0


def _group_alive(proc: subprocess.Popen) -> bool:
    proc.poll()  # reap the leader, or it counts as alive (a zombie)
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------------------------------
# Assembling OUT


def _averaged_checkpoint(espnet_dir: Path, config: dict[str, Any]) -> Path:
    """ESPnet's n-best average for the first criterion that has one, else repo.best_checkpoint's pick."""
    criteria = config_criteria(config)
    found = best_checkpoint(espnet_dir.iterdir() if espnet_dir.is_dir() else (), str(espnet_dir), criteria)
    if found is not None:
        return found
    raise TrainError(f"ESPnet left no model in {espnet_dir}; see {espnet_dir.parent / 'train.log'}.")


def _assemble(
    out: Path,
    config: dict[str, Any],
    train: Dataset,
    valid: Dataset,
    options: TrainOptions,
    follower: _LogFollower,
    normalize: str,
    plan: Any,
    provenance: dict[str, Any] | None,
    started: float,
) -> TrainResult:
    espnet_dir = out / "espnet"
    averaged = _averaged_checkpoint(espnet_dir, config)
    source = averaged.resolve()
    espnet_config = yaml.safe_load((espnet_dir / "config.yaml").read_text(encoding="utf-8"))
    tokens = [str(t) for t in espnet_config["token_list"]]
    write_text(out / "tokens.txt", "".join(f"{t}\n" for t in tokens))
    if espnet_config.get("bpemodel") and Path(espnet_config["bpemodel"]).is_file():  # not a tokenizer name
        copy_file(Path(espnet_config["bpemodel"]), out / "bpe.model")
        espnet_config["bpemodel"] = "bpe.model"
    stats = (espnet_config.get("normalize_conf") or {}).get("stats_file")
    if espnet_config.get("normalize") == "global_mvn" and stats:
        copy_file(Path(stats), out / "feats_stats.npz")
        espnet_config["normalize_conf"]["stats_file"] = "feats_stats.npz"
    if plan is not None:
        text = plan.to_json() if hasattr(plan, "to_json") else plan
        write_text(out / "plan.json", text if isinstance(text, str) else json.dumps(text, indent=2))
    espnet_config = _relative_paths(espnet_config, out)
    last_epoch = _last_epoch(espnet_dir) or follower.last_epoch
    info = _provenance(out, config, train, valid, options, follower, normalize, averaged, provenance, last_epoch)
    # The command line and --conf overrides may carry tokens (--conf hf_token=...): never written in the clear.
    write_text(out / "provenance.json", json.dumps(redact(info), indent=2, default=str) + "\n")
    write_text(out / "config.yaml", yaml.safe_dump(redact(espnet_config), allow_unicode=True, sort_keys=False))
    copy_file(source, out / "model.pth")  # last: its presence means OUT is complete
    return TrainResult(
        out=out,
        model=out / "model.pth",
        config=out / "config.yaml",
        epochs=last_epoch,
        averaged=source.name,
        normalize=normalize,
        history=follower.history,
        seconds=time.monotonic() - started,
        seconds_to_first_step=(follower.first_step_at - started) if follower.first_step_at else None,
    )


def _last_epoch(espnet_dir: Path) -> int:
    epochs = [int(p.name[: -len("epoch.pth")]) for p in espnet_dir.glob("*epoch.pth") if p.name[0].isdigit()]
    return max(epochs, default=0)


def _relative_paths(node: Any, out: Path, key: str = "") -> Any:
    """Every absolute path inside OUT becomes relative to OUT (token strings are left alone)."""
    if key == "token_list":
        return node
    if isinstance(node, dict):
        return {k: _relative_paths(v, out, k) for k, v in node.items()}
    if isinstance(node, list):
        return [_relative_paths(v, out, key) for v in node]
    if isinstance(node, str) and node.startswith(str(out) + os.sep):
        head, sep, rest = node.partition(",")  # data entries are "path,name,type"
        return str(Path(head).relative_to(out)) + sep + rest
    if isinstance(node, str) and node == str(out):
        return "."
    return node


def _provenance(
    out: Path,
    config: dict[str, Any],
    train: Dataset,
    valid: Dataset,
    options: TrainOptions,
    follower: _LogFollower,
    normalize: str,
    averaged: Path,
    given: dict[str, Any] | None,
    last_epoch: int,
) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    def _version(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    previous = {}
    if (out / "provenance.json").is_file():
        previous = json.loads((out / "provenance.json").read_text(encoding="utf-8"))
    init = [str(p).split(":")[0] for p in config.get("init_param") or []]
    info: dict[str, Any] = {
        **previous,
        **(given or {}),
        "versions": {n: _version(n) for n in ("espzoo", "espnet", "torch", "torchaudio")} | {"python": sys.version},
        "command": (given or {}).get("command") or previous.get("command") or sys.argv,
        "options": asdict(options),
        "init_checkpoint": [{"path": p, "sha256": _sha256(Path(p))} for p in init if Path(p).is_file()],
        "normalize": normalize,
        "data": {
            d.name: {k: v for k, v in asdict(d).items() if k not in ("skipped",)} | {"skipped": len(d.skipped)}
            for d in (train, valid)
        },
        "epochs": last_epoch,
        "model": {"file": "model.pth", "averaged_from": averaged.resolve().name},
        "history": previous.get("history", []) + [asdict(r) for r in follower.history],
    }
    return info


def _sha256(path: Path) -> str:
    return file_id(path, lfs=True)  # the Hub's id of an LFS file is its sha256


def iter_epochs(log: str | Path) -> Iterator[tuple[int, dict[str, dict[str, Any]]]]:
    """Every `Nepoch results` line of an ESPnet train.log, parsed."""
    for line in Path(log).read_text(encoding="utf-8", errors="replace").splitlines():
        parsed = parse_results_line(line)
        if parsed:
            yield parsed
