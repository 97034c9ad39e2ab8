"""A training run end to end: stats, ESPnet's trainer in a child process, averaging, and OUT assembled
(model.pth, config, provenance).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from espzoo.data.sources import Dataset
from espzoo.errors import NodeLostError, TrainDiskFullError, TrainError
from espzoo.hub.hf import file_id
from espzoo.repo import best_checkpoint, config_criteria
from espzoo.tasks import task_of
from espzoo.train.child import _keep_early_output, _start_child, _supervise, warm_start
from espzoo.train.log import _LogFollower
from espzoo.train.options import (
    EpochReport,
    TrainOptions,
    TrainResult,
    _check_init,
    _check_sample_rate,
    _normalize_source,
    _with_warmup,
    check_options,
    espnet_args,
    estimate_steps_per_epoch,
    keep_nbest_models,
    needs_new_stats,
    node_workdir,
    text_shapes,
    write_train_config,
)
from espzoo.train.outdir import (
    _file_size_limited,
    _set_aside_incomplete,
    check_out_dir,
    disk_full_is_one_sentence,
    lock_out,
)
from espzoo.transfer.vocab import Vocabulary
from espzoo.utils.fs import copy_file, no_room, replace_dir, write_text
from espzoo.utils.redact import redact
from espzoo.utils.yaml_io import dump_yaml, load_yaml

REFUSAL = "espzoo: refusing to train: "  # how espzoo.train.asr_train starts the one line that says why it stopped


_GLOO_EXIT_ABORT = "terminate called without an active exception"  # std::terminate in gloo's teardown at exit


# What torch.distributed raises in the survivors when a peer's connection drops (gloo on CPUs, NCCL on GPUs).
_PEER_LOST = re.compile(
    r"Connection closed by peer|Connection reset by peer|gloo.*Broken pipe|NCCL (?:communicator was aborted|error)"
)


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
        config = load_yaml(conf_path.read_text(encoding="utf-8"))
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
        write_text(conf_path, dump_yaml(config, allow_unicode=True, sort_keys=False))

    args = task_of(config).train_args + espnet_args(
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
        args += ["--espzoo_lora", str(Path(options.adapters).resolve())]  # read by espzoo.train.asr_train
    if options.saved_names:
        args += ["--espzoo_saved_names", str(Path(options.saved_names).resolve())]  # read by espzoo.train.asr_train
    if options.lr_groups:  # --lr-decay's factors, set on the parameters as ESPnet builds the model (train.lr_groups)
        args += ["--espzoo_lr_groups", str(Path(options.lr_groups).resolve())]  # read by espzoo.train.asr_train
    stage("train")
    follower = _train(args, work, on_epoch, started, resuming, options.stall_s, secondary=work != out)
    if work != out:  # another node: node 0 averages and writes OUT
        stage("done")
        return _secondary_result(out, follower, normalize, started)

    stage("average")
    result = _assemble(out, config, train, valid, options, follower, normalize, job.plan, job.provenance, started)
    stage("done")
    return replace(result, notes=tuple(notes))


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
        return TrainDiskFullError(
            f"ESPnet's {what} ran out of disk space writing into {log.parent}; free space and run the same "
            f"command again with --resume (the full log is {log})."
        )
    last = "\n".join(tail.splitlines()[-15:])
    return TrainError(f"ESPnet's {what} failed (exit {code}); the full log is {log}. Its last lines:\n{last}")


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
    espnet_config = load_yaml((espnet_dir / "config.yaml").read_text(encoding="utf-8"))
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
