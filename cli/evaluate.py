"""Decode with ESPnet's Speech2Text: word and character error rates, transcripts.

    espzoo evaluate exp/bn_ft --data data/test          # WER, CER; ref.trn/hyp.trn/result.json in exp/bn_ft/eval/test/
    espzoo evaluate espnet/bn_openslr53@<rev> --data test.tsv --json   # {"wer", "cer", "utterances", ...}
    espzoo evaluate exp/bn_ft --data data/test --beam 10 --ctc-weight 0.5 --out-dir results/test
    espzoo evaluate exp/bn_ft --data data/test --decode ctc-greedy --jobs 4   # quick WER: batched greedy CTC
    espzoo transcribe exp/bn_ft a.wav b.flac            # one line per file: path<TAB>text
    espzoo transcribe espnet/bn_openslr53 *.wav --json

MODEL is an experiment dir (espzoo finetune --out), a hub-layout folder, or a repo id ORG/NAME[@REV] (pulled
through the HF cache; HF_ENDPOINT may point at `espzoo mirror serve`). --data is a Kaldi data dir, a
.csv/.tsv/.jsonl manifest with audio and text, or a Hugging Face dataset (parquet files, a save_to_disk folder,
hf:ORG/NAME[:CONFIG][@REV]:SPLIT). Audio is mixed to mono and resampled to the model's rate.
WER/CER = (substitutions + deletions + insertions) / reference words or characters, over the whole set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from espzoo.cli._options import DATA_HELP, AudioColumnOpt, JsonOpt, LangOpt, TextColumnOpt
from espzoo.cli._output import info, print_json, print_table

ModelArg = Annotated[
    str,
    typer.Argument(
        help="An experiment dir (espzoo finetune --out), a hub-layout folder or a repo id ORG/NAME[@REV].",
        show_default=False,
    ),
]
DataOpt = Annotated[Path, typer.Option("--data", help=DATA_HELP)]
BeamOpt = Annotated[int, typer.Option("--beam", min=1, help="Beam size (ESPnet's own default is 20: slower).")]
CtcWeightOpt = Annotated[
    float | None,
    typer.Option("--ctc-weight", min=0.0, max=1.0, help="CTC weight in the beam search (default: the model's)."),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N.")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", min=1, help="CPU threads for torch (default: torch's).")]
OutDirOpt = Annotated[
    Path | None,
    typer.Option("--out-dir", help="Where to write ref.trn, hyp.trn, text, result.json (default: OUT/eval/<data>)."),
]
JobsOpt = Annotated[
    int | None,
    typer.Option("--jobs", "-j", min=1, help="Worker processes, each with its own model (default: cores, capped by "
                 "memory; 1 on a GPU)."),
]
DecodeModeOpt = Annotated[
    str,
    typer.Option("--decode", help="beam (ESPnet's beam search), ctc-greedy (batched, fast) or auto (ctc-greedy for "
                 "CTC-only models)."),
]
SkipBadOpt = Annotated[bool, typer.Option("--skip-bad", help="Drop unusable utterances instead of stopping.")]
RowsOpt = Annotated[bool, typer.Option("--rows", help="Also show (or, with --json, include) every utterance.")]


def evaluate(
    model: ModelArg,
    data: DataOpt,
    beam: BeamOpt = 4,
    ctc_weight: CtcWeightOpt = None,
    device: DeviceOpt = "cpu",
    threads: ThreadsOpt = None,
    jobs: JobsOpt = None,
    decode: DecodeModeOpt = "auto",
    lang: LangOpt = None,
    out_dir: OutDirOpt = None,
    skip_bad: SkipBadOpt = False,
    audio_column: AudioColumnOpt = None,
    text_column: TextColumnOpt = None,
    rows: RowsOpt = False,
    json: JsonOpt = False,
) -> None:
    """Decode a data set and print WER and CER. Example: espzoo evaluate exp/bn_ft --data data/test"""
    from espzoo.evaluate import DecodeOptions
    from espzoo.evaluate import evaluate as run_evaluation

    options = DecodeOptions(
        beam_size=beam, ctc_weight=ctc_weight, device=device, threads=threads, jobs=jobs, decode=decode, lang=lang
    )
    with _progress("decoding", quiet=json) as progress:
        report = run_evaluation(model, data, out_dir, options=options, skip_bad=skip_bad, progress=progress,
                                audio_column=audio_column, text_column=text_column)
    if json:
        print_json(report.to_dict(rows=rows))
        return
    if rows:
        print_table(
            [
                {"id": r.id, "WER %": _percent(r.word.rate), "CER %": _percent(r.char.rate),
                 "reference": r.reference, "hypothesis": r.hypothesis}
                for r in report.rows
            ],
            ["id", "WER %", "CER %", "reference", "hypothesis"],
        )
    print_table(
        [
            {"metric": name, "rate %": _percent(score.rate), "errors": score.errors, "S": score.substitutions,
             "D": score.deletions, "I": score.insertions, "N": score.reference_length}
            for name, score in (("WER", report.wer), ("CER", report.cer))
        ],
        ["metric", "rate %", "errors", "S", "D", "I", "N"],
        title=f"{report.utterances} utterances, {report.audio_seconds:.1f} s of audio",
    )
    how = "greedy CTC" if report.decode == "ctc-greedy" else (
        f"beam {report.beam_size}, ctc weight {report.ctc_weight:g}"
    )
    info(
        f"{report.model} on {report.data}: {how}, {report.jobs} job(s), "
        f"real-time factor {report.real_time_factor:.2f}"
    )
    if report.out_dir:
        info(f"wrote ref.trn, hyp.trn, text and result.json to {report.out_dir}")


FilesArg = Annotated[list[Path], typer.Argument(help="Audio files (any format soundfile reads).", show_default=False)]


def transcribe(
    model: ModelArg,
    files: FilesArg,
    beam: BeamOpt = 4,
    ctc_weight: CtcWeightOpt = None,
    device: DeviceOpt = "cpu",
    threads: ThreadsOpt = None,
    jobs: JobsOpt = None,
    decode: DecodeModeOpt = "auto",
    lang: LangOpt = None,
    json: JsonOpt = False,
) -> None:
    """Print one transcript per audio file: path<TAB>text. Example: espzoo transcribe exp/bn_ft a.wav"""
    from espzoo.evaluate import DecodeOptions
    from espzoo.evaluate import transcribe as run_transcription

    options = DecodeOptions(
        beam_size=beam, ctc_weight=ctc_weight, device=device, threads=threads, jobs=jobs, decode=decode, lang=lang
    )
    with _progress("transcribing", quiet=json or len(files) < 2) as progress:
        texts = run_transcription(model, files, options=options, progress=progress)
    if json:
        print_json([{"path": str(f), "text": t} for f, t in zip(files, texts, strict=True)])
        return
    for path, text in zip(files, texts, strict=True):
        typer.echo(f"{path}\t{text}")


class _progress:
    """A rich progress bar on stderr fed by the library's (done, total) callback; nothing when quiet."""

    def __init__(self, label: str, *, quiet: bool) -> None:
        self.label, self.quiet, self.bar, self.task = label, quiet, None, None

    def __enter__(self) -> Any:
        if self.quiet:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=Console(stderr=True), transient=True,
        )
        self.bar.start()
        self.task = self.bar.add_task(self.label, total=None)
        return self.update

    def update(self, done: int, total: int) -> None:
        self.bar.update(self.task, completed=done, total=total)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            if exc[0] is not None:  # failing: cli/main's error line alone, no last frame of the bar
                self.bar.console.quiet = True
            self.bar.stop()


def _percent(rate: float) -> str:
    return "n/a" if rate == float("inf") else f"{100 * rate:.2f}"


def register(app: typer.Typer) -> None:
    for command in (evaluate, transcribe):
        app.command()(command)
