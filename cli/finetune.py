"""Fine-tune a pretrained hub model on your data with ESPnet's own trainer.

    espzoo finetune espnet/bn_openslr53 --train data/train --valid data/dev --out exp/bn_ft
    espzoo finetune espnet/bn_openslr53 --train data/train --valid data/dev --out exp/bn_ft \\
        --exclude decoder --vocab bpe:500 --max-epoch 20
    espzoo finetune exp/bn_ft --train more.jsonl --valid dev.jsonl --out exp/bn_ft2 --freeze encoder
    espzoo finetune espnet/bn_openslr53 ... --resume              # continue after Ctrl-C or a crash
    espzoo finetune espnet/bn_openslr53 ... --ngpu 4 --use-amp    # ESPnet's DDP, one process per GPU
    espzoo finetune espnet/bn_openslr53 ... --conf optim_conf.lr=1e-4 --conf encoder_conf.dropout_rate=0.2
    espzoo finetune espnet/bn_openslr53 ... --lora 8 --lora-alpha 16   # LoRA adapters on a frozen model
    espzoo finetune espnet/bn_openslr53 ... --augment speed,specaug --warmup-frozen 2 --lr-decay 0.9

--augment (default none): speed[=0.9/1.0/1.1] perturbs the training set as asr.sh does, specaug adds ESPnet's
SpecAugment when the pretrained config has none, noise:DIR mixes in the recordings of DIR; `all` is speed,specaug.
--warmup-frozen N trains the new and transplanted layers alone for the first N of --max-epoch epochs (the
transferred body frozen), then everything; --lr-decay D gives encoder block i of L the rate lr * D^(L-i).

--train/--valid take a Kaldi data dir (wav.scp, text), a CSV/TSV/JSONL manifest or a Hugging Face dataset (parquet
files, a save_to_disk folder, hf:ORG/NAME[:CONFIG][@REV]:SPLIT; --text-column/--audio-column name unusual columns).
The transfer options are `espzoo plan`'s (run it first to see what will load). `--vocab bpe:N` without a file
trains on the training transcripts. OUT then holds config.yaml, model.pth, the token list, stats, plan.json and
provenance.json.
With --lora only the adapters (and --train-also modules) train; OUT holds adapter_config.yaml beside model.pth,
and `espzoo export` merges them (or --adapter-only).
Several machines: see `espzoo.train`'s docstring (--num-nodes, --node-rank, --master-addr, --master-port).
    espzoo finetune M ... --out exp/ft --num-nodes 2 --node-rank R --master-addr node0 --master-port 29500
(run on every node, R = 0, 1; on CPUs the gloo backend is used; only node 0 writes OUT).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from espzoo.cli._options import (
    DATA_HELP,
    AudioColumnOpt,
    JsonOpt,
    ModelArg,
    TextColumnOpt,
    with_transfer_options,
)
from espzoo.cli._output import info, print_json

DataOpt = Annotated[Path, typer.Option(help=DATA_HELP)]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="The experiment dir to write (resumable).")]


@with_transfer_options
def finetune(
    model: ModelArg,
    train: DataOpt = ...,  # type: ignore[assignment]
    valid: DataOpt = ...,  # type: ignore[assignment]
    out: OutOpt = ...,  # type: ignore[assignment]
    transfer: Any = None,
    max_epoch: Annotated[int, typer.Option(help="Epochs to train.")] = 20,
    lr: Annotated[float, typer.Option(help="Peak learning rate, reached after the warmup.")] = 5e-4,
    warmup_steps: Annotated[int | None, typer.Option(help="Warmup steps (default: 10% of the run).")] = None,
    batch_bins: Annotated[int | None, typer.Option(help="ESPnet numel batch size (default: 1M CPU, 16M/GPU).")] = None,
    accum_grad: Annotated[int, typer.Option(help="Accumulate gradients over N batches.")] = 1,
    keep_nbest: Annotated[int, typer.Option(help="Average the N best epochs into model.pth.")] = 5,
    patience: Annotated[int | None, typer.Option(help="Stop after N epochs without improvement.")] = None,
    ngpu: Annotated[int, typer.Option(help="GPUs to train on (DDP when more than one).")] = 0,
    use_amp: Annotated[bool, typer.Option("--use-amp", help="Mixed precision (GPU only).")] = False,
    num_workers: Annotated[int | None, typer.Option(help="Data loader workers.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (data order, fresh rows).")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in OUT from its last epoch.")] = False,
    conf: Annotated[
        list[str] | None, typer.Option("--conf", help="Override any training config key: key=value (dotted).")
    ] = None,
    num_nodes: Annotated[int, typer.Option(help="Machines in a multi-node run.")] = 1,
    node_rank: Annotated[int | None, typer.Option(help="This machine's rank in a multi-node run.")] = None,
    master_addr: Annotated[str | None, typer.Option(help="Node 0's address in a multi-node run.")] = None,
    master_port: Annotated[int | None, typer.Option(help="A free port on node 0 in a multi-node run.")] = None,
    dist_launcher: Annotated[str | None, typer.Option(help="slurm or mpi: ranks come from the launcher.")] = None,
    stall_minutes: Annotated[
        float, typer.Option(help="Stop as stalled when ESPnet's log stays silent this long (0: never).")
    ] = 60.0,
    dist_backend: Annotated[
        str | None, typer.Option(help="torch.distributed backend (default: nccl with GPUs, gloo on CPUs).")
    ] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Drop bad utterances instead of stopping.")] = False,
    allow_pipes: Annotated[bool, typer.Option("--allow-pipes", help="Run pipe commands in wav.scp.")] = False,
    audio_column: AudioColumnOpt = None,
    text_column: TextColumnOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check data, plan and apply; do not train.")] = False,
    guard: Annotated[
        Path | None,
        typer.Option("--guard", help="A second (general) data set: the pretrained and the fine-tuned model are "
                     "evaluated on it and on --valid, to show the gain and what was forgotten."),
    ] = None,
    augment: Annotated[
        str, typer.Option(help="none, all, or speed[=0.9/1.0/1.1], specaug, noise:DIR, comma-separated.")
    ] = "none",
    warmup_frozen: Annotated[
        int, typer.Option(help="First N epochs: only new and transplanted layers train, the transferred body frozen.")
    ] = 0,
    lr_decay: Annotated[
        float, typer.Option(help="Layer-wise lr decay for the encoder (block i of L learns at lr*D^(L-i)); 1: off.")
    ] = 1.0,
    lm_text: Annotated[
        Path | None,
        typer.Option("--lm-text", help="Then train an LM on the model's new tokens from this text (as `espzoo lm "
                     "train OUT --text`) into OUT/lm, which evaluate/transcribe/export use by default."),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Fine-tune MODEL on your data. Example: espzoo finetune ORG/NAME --train d/train --valid d/dev --out exp/ft"""
    from espzoo.train.augment import parse_augment
    from espzoo.train.options import TrainOptions
    from espzoo.train.recipe import FinetuneRequest
    from espzoo.train.schedule import ScheduleOptions

    training = TrainOptions(
        max_epoch=max_epoch, lr=lr, warmup_steps=warmup_steps, batch_bins=batch_bins, accum_grad=accum_grad,
        keep_nbest=keep_nbest, patience=patience, ngpu=ngpu, use_amp=use_amp, num_workers=num_workers, seed=seed,
        resume=resume, num_nodes=num_nodes, node_rank=node_rank, master_addr=master_addr, master_port=master_port,
        dist_launcher=dist_launcher, dist_backend=dist_backend, conf=list(conf or []),
        stall_s=stall_minutes * 60 if stall_minutes > 0 else None,
    )
    request = FinetuneRequest(
        model=model, train=train, valid=valid, out=out, transfer=transfer, training=training,
        skip_bad=skip_bad, allow_pipes=allow_pipes, command=["espzoo", *sys.argv[1:]],
        audio_column=audio_column, text_column=text_column, augment=parse_augment(augment),
        schedule=ScheduleOptions(warmup_frozen=warmup_frozen, lr_decay=lr_decay),
    )
    if guard is not None and not guard.exists() and not str(guard).startswith("hf:"):
        from espzoo.errors import DataError

        raise DataError(f"--guard {guard} does not exist; pass a Kaldi dir, a manifest or a Hugging Face dataset.")
    if lm_text is not None and not lm_text.exists() and not str(lm_text).startswith("hf:"):  # before training
        from espzoo.errors import LanguageModelError

        raise LanguageModelError(f"--lm-text {lm_text} does not exist; pass a text file, a Kaldi dir or a manifest.")
    summary = _run(request, dry_run=dry_run, quiet=json)
    if lm_text is not None and not dry_run:  # LM hook: the LM on the fine-tuned model's own tokens
        from espzoo.train.lm_train import train_lm

        if not json:
            info("[dim]training the LM on the model's tokens with ESPnet's lm_train[/dim]")
        summary["lm"] = train_lm(request.out, lm_text).to_dict()
        if not json:
            info(f"LM: {summary['lm']['path']} (validation perplexity {summary['lm']['perplexity'] or 0:.2f})")
    if guard is not None and not dry_run:
        summary["guard"] = _guard(request, guard, quiet=json)
    if json:
        print_json(summary)


def _guard(request: Any, guard: Path, *, quiet: bool) -> dict[str, Any]:
    """The pretrained model (at the commit fine-tuned from) and OUT on --valid and --guard, before and after."""
    import json as json_module

    from espzoo.cli._output import print_table
    from espzoo.decode.report import before_after

    provenance = json_module.loads((Path(request.out) / "provenance.json").read_text(encoding="utf-8"))
    source = provenance.get("source") or {}
    pretrained = f"{source['repo_id']}@{source['commit']}" if source.get("repo_id") and source.get("commit") else (
        request.model)
    if not quiet:
        info(f"[dim]evaluating {pretrained} and {request.out} on {request.valid} and {guard}[/dim]")
    comparisons = before_after(pretrained, request.out, [request.valid, guard])
    rows = []
    for role, comparison in zip(("valid", "guard"), comparisons, strict=True):
        data = comparison.to_dict()
        for metric, label in (("normalized_wer", "norm. WER"), ("wer", "WER"), ("cer", "CER")):
            m = data.get(metric)
            if not isinstance(m, dict) or m.get("difference") is None:
                continue
            rows.append({"set": f"{Path(comparison.data).name} ({role})", "metric": label,
                         "before %": f"{100 * m['a']:.1f}", "after %": f"{100 * m['b']:.1f}",
                         "change [95% CI]": f"{100 * m['difference']:+.1f} [{100 * m['ci95'][0]:+.1f}, "
                                            f"{100 * m['ci95'][1]:+.1f}]"})
    if not quiet:
        print_table(rows, ["set", "metric", "before %", "after %", "change [95% CI]"],
                    title="pretrained (before) and fine-tuned (after), paired bootstrap")
    return {"valid": comparisons[0].to_dict(), "guard": comparisons[1].to_dict()}


def _run(request: Any, *, dry_run: bool, quiet: bool) -> dict[str, Any]:
    from espzoo.train.recipe import finetune, prepare_finetune

    progress = _Progress(request.training.max_epoch, quiet=quiet)
    if dry_run:
        prepared = prepare_finetune(request, on_stage=progress.stage, on_note=progress.note)
        if not quiet:
            info(recipe_line(prepared.recipe))
        return {"out": str(Path(request.out).resolve()), "init_checkpoint": str(prepared.init_checkpoint),
                "train": prepared.train.num_utterances, "valid": prepared.valid.num_utterances,
                "plan": prepared.plan.to_json()["summary"], "recipe": prepared.recipe,
                **({"adapters": prepared.adapters.to_json()} if prepared.adapters else {})}
    with progress:  # a TrainInterrupted (Ctrl-C) exits 130 with the library's "continue with --resume" sentence
        result = finetune(request, on_stage=progress.stage, on_epoch=progress.epoch, on_note=progress.note)
    last = result.history[-1] if result.history else None
    summary = {
        "out": str(result.out), "model": str(result.model), "config": str(result.config), "epochs": result.epochs,
        "averaged": result.averaged, "normalize": result.normalize, "seconds": round(result.seconds, 1),
        "valid_acc": last.valid_acc if last else None, "valid_loss": last.valid_loss if last else None,
        "recipe": result.recipe,
    }
    from espzoo.decode import curves

    drawn = curves.find(result.out)  # ESPnet's per-epoch plots and TensorBoard logs, kept in OUT
    summary["curves"] = drawn.to_json()
    for note in result.notes:
        progress.note(note)
    if not quiet:
        info(f"done: {result.model} (average of {result.averaged}, {result.epochs} epochs, "
             f"{result.seconds:.0f} s); evaluate with: espzoo evaluate {request.out} --data DIR")
        info(recipe_line(result.recipe))
        shown = curves.find(request.out)  # named as the user wrote OUT
        if shown.images:
            info(f"curves: {shown.images[0].parent}/*.png")
        if shown.tensorboard:
            info(f"watch them with: tensorboard --logdir {shown.tensorboard}")
    return summary


def recipe_line(recipe: dict[str, Any]) -> str:
    """What was on: `augmentation: speed 0.9/1/1.1, specaug; schedule: none` (and the notes on it)."""
    line = f"augmentation: {recipe.get('augment', 'none')}; schedule: {recipe.get('schedule', 'none')}"
    notes = recipe.get("notes") or []
    return line + "".join(f"\n  {n}" for n in notes)


class _Progress:
    """A rich progress bar over epochs, fed by the trainer's callbacks (stderr, so --json stays clean)."""

    STAGES = {"model": "resolving the pretrained model", "data": "checking and converting the data",
              "plan": "planning the transfer", "apply": "writing the init checkpoint",
              "stats": "computing normalization statistics", "train": "training with ESPnet",
              "average": "averaging the best epochs", "done": "done"}

    def __init__(self, max_epoch: int, *, quiet: bool) -> None:
        self.max_epoch, self.quiet = max_epoch, quiet
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            if exc[0] is not None:  # failing: cli/main's error line alone, no last frame of the bar
                self.bar.console.quiet = True
            self.bar.stop()

    def stage(self, name: str) -> None:
        if self.quiet or name == "done":
            return
        message = f"[dim]{self.STAGES.get(name, name)}[/dim]"
        (self.bar.console.print if self.bar else info)(message)
        if name == "train" and self.bar is None:  # the bar appears when epochs start, not before
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("epoch"), MofNCompleteColumn(), BarColumn(), TimeRemainingColumn(),
                                TextColumn("{task.fields[metrics]}"), console=Console(stderr=True))
            self.bar.start()
            self.task = self.bar.add_task("train", total=self.max_epoch, metrics="")

    def note(self, message: str) -> None:
        """Said even with --json (on stderr): dropped utterances and the like must not go unnoticed."""
        (self.bar.console.print if self.bar else info)(f"note: {message}")

    def epoch(self, report: Any) -> None:
        if self.bar is None:
            return
        parts = [f"loss {report.loss:.3f}" if report.loss is not None else "",
                 f"valid acc {report.valid_acc:.3f}" if report.valid_acc is not None else "",
                 f"valid loss {report.valid_loss:.3f}" if report.valid_loss is not None else ""]
        self.bar.update(self.task, completed=report.epoch, total=report.max_epoch,
                        metrics="  ".join(p for p in parts if p))


def register(app: typer.Typer) -> None:
    app.command()(finetune)
