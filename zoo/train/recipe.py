"""The fine-tuning recipe: a user's data in, a fine-tuned ESPnet model out, starting from a hub model.

    from espzoo.train.recipe import FinetuneRequest, finetune
    from espzoo.train import TrainOptions
    from espzoo.transfer import TransferOptions

    result = finetune(FinetuneRequest(
        model="espnet/bn_openslr53", train="data/train", valid="data/dev", out="exp/bn_ft",
        transfer=TransferOptions(excludes=("decoder",), vocab="bpe:500"),
        training=TrainOptions(max_epoch=20),
    ))

Each step is one call into the library, in the order of the design's data flow; read it top to bottom:
the pretrained model is resolved (and pinned to a commit), the data checked and converted to the model's
sample rate, the transfer planned (new vocabulary, shared-token rows kept) and applied into an init
checkpoint with exactly the new model's shapes, and ESPnet's trainer takes it from there.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from espzoo.data.augment import noise_list, speed_perturb
from espzoo.data.convert import MAX_SECONDS, prepare
from espzoo.data.sources import Dataset
from espzoo.errors import DataError, S2TError, TransferError
from espzoo.models.s2t import PROVENANCE_SECTION, preprocessor_settings, write_training_data
from espzoo.repo import SAVED_NAMES_NAME, config_sample_rate
from espzoo.tasks import task_of
from espzoo.train.augment import AugmentOptions, augment_config, check_augment
from espzoo.train.child import in_standby, warm_start
from espzoo.train.driver import run
from espzoo.train.options import EpochReport, TrainOptions, TrainResult, check_options, node_workdir
from espzoo.train.outdir import check_out_dir, disk_full_is_one_sentence, lock_out
from espzoo.train.schedule import ScheduleOptions, check_schedule, frozen_body, lr_groups_config, write_lr_groups
from espzoo.transfer.apply import apply_plan
from espzoo.transfer.plan import TransferOptions, TransferPlan, plan_transfer, unused_problem
from espzoo.transfer.sources import Source, open_source
from espzoo.transfer.vocab import parse_vocab_spec
from espzoo.utils.yaml_io import load_yaml


@dataclass(frozen=True)
class FinetuneRequest:
    """Everything `espzoo finetune` takes, as data."""

    model: str  # repo id org/name[@rev], hub-layout folder or experiment dir
    train: str | Path  # Kaldi data dir or manifest
    valid: str | Path
    out: str | Path
    transfer: TransferOptions = field(default_factory=TransferOptions)
    training: TrainOptions = field(default_factory=TrainOptions)
    skip_bad: bool = False  # drop bad utterances (and say how many) instead of stopping
    allow_pipes: bool = False  # run pipe commands found in wav.scp
    command: list[str] | None = None  # the command line, for provenance
    audio_column: str | None = None  # a manifest's or Hugging Face dataset's columns, when not the usual names
    text_column: str | None = None
    augment: AugmentOptions = field(default_factory=AugmentOptions)  # --augment (espzoo.train.augment)
    schedule: ScheduleOptions = field(default_factory=ScheduleOptions)  # --warmup-frozen, --lr-decay (train.schedule)


@dataclass(frozen=True)
class Prepared:
    """What the steps before training produced (also what `espzoo finetune --dry-run` shows)."""

    source: Source
    train: Dataset
    valid: Dataset
    plan: TransferPlan
    init_checkpoint: Path
    config: dict[str, Any]  # the adapted training config (new vocabulary, init checkpoint)
    adapters: Any = None  # espzoo.lora.AdapterSummary with --lora
    recipe: dict[str, Any] = field(default_factory=dict)  # what augmentation and schedule are on (recipe_summary)
    frozen_body: tuple[str, ...] = ()  # --warmup-frozen: the modules the warm-up freezes
    lr_groups: Path | None = None  # --lr-decay: OUT/init/lr_groups.json


def finetune(
    request: FinetuneRequest,
    *,
    on_stage: Callable[[str], None] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> TrainResult:
    """Run the whole recipe; OUT then holds the model, its config, vocabulary, stats, plan and provenance.

    OUT is locked from before the first write to the end: a second run on it is refused and touches nothing."""
    out = Path(request.out).expanduser().resolve()
    work = node_workdir(out, request.training)  # OUT on node 0; the other nodes prepare in a scratch folder
    secondary = work != out
    stage = on_stage or (lambda _: None)
    source = _resolve(request, stage)
    if secondary:  # left over from a run of this node that was killed: this node prepares afresh
        shutil.rmtree(work, ignore_errors=True)
    try:
        with _none_left_when_refused(None if secondary else out), lock_out(out, request.training), \
                disk_full_is_one_sentence(work):
            if not secondary:  # what OUT holds is node 0's to check: the other nodes start while it writes there
                check_out_dir(out, request.training)
            with warm_start(out):  # ESPnet's process imports ESPnet while this one prepares data, plan and init
                prepared = _prepare(request, work, stage, on_note or (lambda _: None), source)
                return _train(request, prepared, on_stage=on_stage, on_epoch=on_epoch)
    finally:
        if secondary:  # another node's scratch copy of the inputs
            shutil.rmtree(work, ignore_errors=True)


def _train(
    request: FinetuneRequest,
    prepared: Prepared,
    *,
    on_stage: Callable[[str], None] | None,
    on_epoch: Callable[[EpochReport], None] | None,
) -> TrainResult:
    provenance = {
        "source": {"model": request.model, "repo_id": prepared.source.repo_id, "commit": prepared.source.commit},
        "command": request.command or sys.argv,
    }
    prompt = prepared.plan.language.prompt if prepared.plan.language is not None else None
    if prompt is not None:  # an S2T model: decoding uses the same prompt (espzoo.models.s2t)
        task = task_of(prepared.config)
        provenance[PROVENANCE_SECTION] = {"task": prompt.task, "lang": prompt.lang, "espnet_task": task.name}
    provenance["recipe"] = prepared.recipe
    stats_file = None
    if request.transfer.stats == "pretrained":
        stats_file = (prepared.config.get("normalize_conf") or {}).get("stats_file")
    options = _with_adapters(request, prepared.adapters is not None)
    if prepared.lr_groups is not None:
        options = replace(options, lr_groups=str(prepared.lr_groups))
    init_checkpoint, warm = prepared.init_checkpoint, None
    if request.schedule.warmup_frozen:  # two ESPnet runs: N epochs with the body frozen, then all of it
        warm, init_checkpoint, stats_file = _warm_up(request, prepared, options, stats_file, provenance,
                                                     on_epoch=on_epoch, on_stage=on_stage)
        options = replace(options, max_epoch=options.max_epoch - request.schedule.warmup_frozen)
        on_epoch = _shifted(on_epoch, request.schedule.warmup_frozen, request.training.max_epoch)
    result = run(
        prepared.config,
        vocabulary=prepared.plan.vocabulary,
        init_checkpoint=init_checkpoint,
        stats_file=stats_file,
        train=prepared.train,
        valid=prepared.valid,
        out=request.out,
        options=_with_saved_names(options, prepared.init_checkpoint),
        plan=_PlanWithRecipe(prepared.plan, prepared.recipe),
        provenance=provenance,
        on_epoch=on_epoch,
        on_stage=on_stage,
    )
    if warm is not None:  # the whole run's epochs and history, the warm-up's first
        n = request.schedule.warmup_frozen
        history = [*warm.history, *(replace(r, epoch=r.epoch + n) for r in result.history)]
        normalize = warm.normalize if warm.normalize == "collected" else result.normalize
        result = replace(result, epochs=result.epochs + n, history=history, normalize=normalize)
    return replace(result, recipe=prepared.recipe)


@dataclass(frozen=True)
class _PlanWithRecipe:
    """plan.json's content: the plan, and what augmentation and schedule were on (made when OUT is assembled, not
    before the first step: an OWSM plan's JSON is large)."""

    plan: TransferPlan
    recipe: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {**self.plan.to_json(), "recipe": self.recipe}


WARMUP_DIR = "warmup"  # OUT/warmup: the frozen warm-up's own ESPnet run (--warmup-frozen)


def _warm_up(
    request: FinetuneRequest,
    prepared: Prepared,
    options: TrainOptions,
    stats_file: str | None,
    provenance: dict[str, Any],
    *,
    on_epoch: Callable[[EpochReport], None] | None,
    on_stage: Callable[[str], None] | None,
) -> tuple[TrainResult, Path, str | None]:
    """The first --warmup-frozen epochs, in OUT/warmup, with the transferred body frozen by ESPnet's freeze_param:
    (its result, its last epoch's model, which OUT's run starts from, and the stats that run uses). A resumed
    run whose warm-up finished keeps it."""
    n = request.schedule.warmup_frozen
    warm = Path(request.out).expanduser().resolve() / WARMUP_DIR
    config = dict(prepared.config)
    config["freeze_param"] = list(dict.fromkeys([*(config.get("freeze_param") or []), *prepared.frozen_body]))
    # Its last epoch is what the next run continues from, not an average; names as the installed ESPnet has them.
    warm_options = replace(options, max_epoch=n, keep_nbest=1, patience=None, saved_names=None)
    finished = warm / "model.pth"
    if request.training.resume and finished.is_file():
        from espzoo.train.options import _normalize_source
        from espzoo.utils.yaml_io import load_yaml

        done = load_yaml((warm / "conf" / "train.yaml").read_text(encoding="utf-8"))
        result = TrainResult(out=warm, model=finished, config=warm / "config.yaml", epochs=n, averaged="",
                             normalize=_normalize_source(done, warm), history=[], seconds=0.0,
                             seconds_to_first_step=None)
    else:
        result = run(config, vocabulary=prepared.plan.vocabulary, init_checkpoint=prepared.init_checkpoint,
                     stats_file=stats_file, train=prepared.train, valid=prepared.valid, out=warm,
                     options=warm_options, plan=None, provenance=provenance, on_epoch=on_epoch, on_stage=on_stage)
    collected = warm / "stats" / "train" / "feats_stats.npz"
    last = warm / "espnet" / f"{n}epoch.pth"
    return result, last, str(collected) if collected.is_file() else stats_file


def _shifted(on_epoch: Callable[[EpochReport], None] | None, by: int, total: int
             ) -> Callable[[EpochReport], None] | None:
    """The epochs of the run after the warm-up, numbered as epochs of the whole run."""
    if on_epoch is None:
        return None
    return lambda report: on_epoch(replace(report, epoch=report.epoch + by, max_epoch=total))


def prepare_finetune(
    request: FinetuneRequest,
    *,
    on_stage: Callable[[str], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> Prepared:
    """The steps before training: resolve the model, check and convert the data, plan and apply the transfer.
    `on_note` hears what the user should know (e.g. how many utterances --skip-bad dropped, and where the list is)."""
    stage = on_stage or (lambda _: None)
    out = Path(request.out).expanduser().resolve()
    work = node_workdir(out, request.training)  # OUT on node 0: only it writes there
    source = _resolve(request, stage)
    with _none_left_when_refused(out if work == out else None), lock_out(out, request.training), \
            disk_full_is_one_sentence(work):
        if work == out:  # what OUT holds is node 0's to check: the other nodes start while it writes there
            check_out_dir(out, request.training)
        return _prepare(request, work, stage, on_note or (lambda _: None), source)


@contextmanager
def _none_left_when_refused(out: Path | None) -> Iterator[None]:
    """An OUT this run created is removed again (lock file, extracted audio and all) when its data is refused:
    nothing was trained, and an empty OUT with a lock file in it only misleads the next run. Entered before
    lock_out, so the lock is released first; None (a node other than rank 0, which does not own OUT): nothing."""
    created = out is not None and not out.exists()
    try:
        yield
    except DataError:
        if created:
            shutil.rmtree(out, ignore_errors=True)  # type: ignore[arg-type]
        raise


def _resolve(request: FinetuneRequest, stage: Callable[[str], None]) -> Source:
    """What needs no OUT: options that cannot work and a model that cannot be opened are refused before OUT is
    created (resolving writes to the HF cache only)."""
    parse_vocab_spec(request.transfer.vocab)
    check_options(request.training)
    check_schedule(request.schedule, request.training.max_epoch, lora=bool(request.transfer.lora))
    check_augment(request.augment)
    stage("model")
    source = open_source(request.model)
    if source.adapter is not None:  # an adapter-only export continues as it is: --lora may not change it
        from espzoo.lora.files import check_continuation

        check_continuation(source.adapter, request.transfer.lora)
    return source


def _prepare(
    request: FinetuneRequest, out: Path, stage: Callable[[str], None], note: Callable[[str], None], source: Source
) -> Prepared:
    # Plan against the pinned commit: the second look-up then costs no request and cannot drift.
    model = f"{source.repo_id}@{source.commit}" if source.repo_id and source.commit else request.model
    rate = config_sample_rate(source.config or {})
    if task_of(source.config or {}).prompted and not request.transfer.lang:
        raise S2TError(f"{request.model} is an S2T (OWSM) model: give the data's language with --lang (e.g. spa).")

    stage("data")  # before any model work: bad data is the most common failure, and the cheapest to report
    columns = {"audio_column": request.audio_column, "text_column": request.text_column}
    # The longest utterance the model takes: an S2T model's preprocessor cuts speech at its speech_length.
    longest = MAX_SECONDS
    if task_of(source.config or {}).prompted:
        longest = min(longest, float(preprocessor_settings(source.config or {})["speech_length"]))
    # Long recordings with one transcript each (issue 23): aligned by the pretrained model, cut into utterances.
    from espzoo.train.longdata import cut_if_long

    train_data, valid_data = (cut_if_long(model, data, out / "data" / f"{name}_long", max_seconds=longest,
                                          note=note, child=Path(request.out).expanduser().resolve())
                              for name, data in (("train", request.train), ("valid", request.valid)))
    train = prepare(train_data, out / "data" / "train", sample_rate=rate, name="train", max_seconds=longest,
                    skip_bad=request.skip_bad, allow_pipes=request.allow_pipes, **columns)
    valid = prepare(valid_data, out / "data" / "valid", sample_rate=rate, name="valid", max_seconds=longest,
                    skip_bad=request.skip_bad, allow_pipes=request.allow_pipes, **columns)
    for dataset in (train, valid):
        if dataset.skipped_note():
            note(dataset.skipped_note())  # type: ignore[arg-type]

    stage("plan")
    # The model work (ESPnet builds the new model, torch writes init.pth) runs in the training child that
    # finetune() started, which has imported ESPnet meanwhile; this process never imports it (trainer.in_standby).
    child = Path(request.out).expanduser().resolve()
    plan = in_standby(child, plan_transfer, model, request.transfer, texts=train.texts(), workdir=out / "vocab",
                      text_column=request.text_column)  # a dataset --vocab TEXT: the column --train uses
    if not request.transfer.allow_unused and (problem := unused_problem(plan)):
        raise TransferError(problem)  # a pretrained tensor that does not arrive is never silent
    init_dir = out / "init"
    resuming_run = request.training.resume and (out / "conf" / "train.yaml").is_file()
    lora = request.transfer.lora or source.adapter is not None  # an adapter-only export continues as LoRA
    adapters = in_standby(child, _plan_adapters, request, plan, source, out, resuming_run) if lora else None
    resuming = request.training.resume and (init_dir / "init.pth").is_file() and (init_dir / "config.yaml").is_file()
    if not resuming:  # a resumed run keeps the init checkpoint it started from
        stage("apply")
        in_standby(child, apply_plan, plan, init_dir, seed=request.training.seed)
        if source.adapter is not None:  # its trained lora_* tensors, not a fresh B = 0 (espzoo.lora)
            in_standby(child, _continue_adapter, init_dir / "init.pth", source.adapter, adapters)
    # libyaml's safe loader where PyYAML has it: an OWSM config's 50k tokens load in 0.3 s instead of 2.6 s.
    config = load_yaml((init_dir / "config.yaml").read_text(encoding="utf-8"))
    train, config, recipe = _augmented(request, train, config, out, rate)
    body = tuple(frozen_body(plan)) if request.schedule.warmup_frozen else ()
    lr_groups = None
    if request.schedule.lr_decay != 1.0:
        lr_groups = write_lr_groups(plan, request.schedule.lr_decay, init_dir)
        config = lr_groups_config(config)
    recipe["schedule"] = request.schedule.describe()
    if body:
        recipe["frozen_during_warmup"] = list(body)
    prompt = plan.language.prompt if plan.language is not None else None
    if prompt is not None:  # S2T: text with the prompt, text.prev and text.ctc, as its preprocessor reads
        train, valid = (write_training_data(d, config, prompt, out / "data" / f"{d.name}_s2t") for d in (train, valid))
    return Prepared(source, train, valid, plan, init_dir / "init.pth", config, adapters, recipe, body, lr_groups)


def _augmented(request: FinetuneRequest, train: Dataset, config: dict[str, Any], out: Path, rate: int
               ) -> tuple[Dataset, dict[str, Any], dict[str, Any]]:
    """--augment: the training set speed-perturbed (OUT/data/train_sp, as asr.sh names it), the config with
    ESPnet's SpecAug and noise; and what was on, for the plan, provenance and the final message."""
    augment = request.augment
    recipe: dict[str, Any] = {"augment": augment.describe()}
    if augment.speed:
        before = train.num_utterances
        train = speed_perturb(train, augment.speed, out / "data" / "train_sp", out / "data" / "audio")
        recipe["speed_perturb"] = {"factors": list(augment.speed), "utterances": [before, train.num_utterances]}
    noise = noise_list(augment.noise, out / "data" / "noise", rate) if augment.noise else None
    config, notes = augment_config(config, augment, noise)
    if notes:
        recipe["notes"] = notes
    return train, config, recipe


def _plan_adapters(request: FinetuneRequest, plan: TransferPlan, source: Source, out: Path, resuming: bool) -> Any:
    """--lora: OUT/adapter_config.yaml (what trains, on which base), kept as it is when resuming."""
    from espzoo.lora.config import CONFIG_NAME, AdapterConfig
    from espzoo.lora.files import continued_adapter, plan_adapters

    path = out / CONFIG_NAME
    if resuming and path.is_file():
        kept = AdapterConfig.read(path)
        return plan_adapters(plan, _as_options(kept), base_repo=kept.base_repo, base_commit=kept.base_commit)[1]
    if source.adapter is not None:  # an adapter-only export: continued on the base it names
        adapter, summary = continued_adapter(source.adapter, request.transfer.lora, plan)
    else:
        adapter, summary = plan_adapters(plan, request.transfer.lora, base_repo=source.repo_id,
                                         base_commit=source.commit)
    if not (out / "model.pth").exists() and not (out / "conf" / "train.yaml").exists():  # else run() refuses OUT
        adapter.write(path)
    return summary


def _continue_adapter(init_checkpoint: Path, root: Path, summary: Any) -> None:
    from espzoo.lora.files import continue_adapter  # imports torch: in the training child (see _prepare)

    continue_adapter(init_checkpoint, root, summary)


def _as_options(adapter: Any) -> Any:
    from espzoo.lora.config import LoraOptions

    return LoraOptions(adapter.rank, adapter.alpha, adapter.dropout, adapter.targets, adapter.train_also)


def _with_saved_names(options: TrainOptions, init_checkpoint: Path) -> TrainOptions:
    """Names of an older ESPnet that the plan mapped (OUT/init/saved_names.json): the model is saved under them."""
    names = Path(init_checkpoint).parent / SAVED_NAMES_NAME
    return replace(options, saved_names=str(names)) if names.is_file() else options


def _with_adapters(request: FinetuneRequest, adapted: bool) -> TrainOptions:
    if not adapted:
        return request.training
    from espzoo.lora.config import CONFIG_NAME

    return replace(request.training, adapters=str(Path(request.out).expanduser().resolve() / CONFIG_NAME))
