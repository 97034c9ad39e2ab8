"""Decode with ESPnet's Speech2Text: word and character error rates, transcripts.

    espzoo evaluate exp/bn_ft --data data/test          # WER, CER; ref.trn/hyp.trn/result.json in exp/bn_ft/eval/test/
    espzoo evaluate espnet/bn_openslr53@<rev> --data test.tsv --json   # {"wer", "cer", "utterances", ...}
    espzoo evaluate exp/bn_ft --data data/test --beam 10 --ctc-weight 0.5 --out-dir results/test
    espzoo evaluate exp/bn_ft --data data/test --decode ctc-greedy --jobs 4   # quick WER: batched greedy CTC
    espzoo evaluate exp/bn_ft --data data/test --report report/   # an HTML page: worst utterances first, aligned
    espzoo evaluate espnet/bn_openslr53 exp/bn_ft --data data/test  # both, and the difference with its 95% interval
    espzoo evaluate exp/bn_ft --data data/test --compare exp/bn_ft_v1/eval/test   # against an earlier run's result
    espzoo transcribe exp/bn_ft a.wav b.flac            # one line per file: path<TAB>text
    espzoo transcribe espnet/bn_openslr53 *.wav --json

MODEL is an experiment dir (espzoo finetune --out), a hub-layout folder, or a repo id ORG/NAME[@REV] (pulled
through the HF cache; HF_ENDPOINT may point at `espzoo mirror serve`). --data is a Kaldi data dir, a
.csv/.tsv/.jsonl manifest with audio and text, or a Hugging Face dataset (parquet files, a save_to_disk folder,
hf:ORG/NAME[:CONFIG][@REV]:SPLIT). Audio is mixed to mono and resampled to the model's rate.
WER/CER = (substitutions + deletions + insertions) / reference words or characters, over the whole set: as
written, and normalized (whisper-normalizer: lower case, no punctuation, NFKC; --normalizer), each with a 95%
bootstrap interval over utterances (over speakers when the data names them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from espzoo.cli._options import DATA_HELP, AudioColumnOpt, JsonOpt, LangOpt, TextColumnOpt
from espzoo.cli._output import info, print_json, print_table
from espzoo.cli.lm import LmOpt, LmWeightOpt, print_sweep

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
MaxSegmentOpt = Annotated[
    float | None,
    typer.Option("--max-segment", min=1.0, max=300.0, help="Audio longer than this many seconds is cut at pauses "
                 "(voice-activity detection) and decoded window by window (default 20)."),
]
FormatOpt = Annotated[
    str, typer.Option("--format", help="txt (path<TAB>text), json (segments and words with times), srt or vtt.")
]
SkipBadOpt = Annotated[bool, typer.Option("--skip-bad", help="Drop unusable utterances instead of stopping.")]
RowsOpt = Annotated[bool, typer.Option("--rows", help="Also show (or, with --json, include) every utterance.")]
ModelsArg = Annotated[
    list[str],
    typer.Argument(
        help="An experiment dir (espzoo finetune --out), a hub-layout folder or a repo id ORG/NAME[@REV]; two of them "
        "(before, after) to compare them on the same data.",
        show_default=False,
    ),
]
NormalizerOpt = Annotated[
    str,
    typer.Option("--normalizer", help="Text normalization for the normalized scores: auto (whisper-normalizer's "
                 "English one for English models, its basic one otherwise), basic, english or none."),
]
ReportOpt = Annotated[
    Path | None, typer.Option("--report", help="Write a self-contained HTML error report to this folder.")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace a --report folder that holds other files.")]
CompareOpt = Annotated[
    Path | None,
    typer.Option("--compare", help="An earlier evaluation on the same data (its folder or result.json): print the "
                 "difference with its 95% interval."),
]


def evaluate(
    model: ModelsArg,
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
    normalizer: NormalizerOpt = "auto",
    report: ReportOpt = None,
    force: ForceOpt = False,
    compare: CompareOpt = None,
    rows: RowsOpt = False,
    max_segment: MaxSegmentOpt = None,
    lm: LmOpt = None,
    lm_weight: LmWeightOpt = None,
    json: JsonOpt = False,
) -> None:
    """Decode a data set and print WER and CER. Example: espzoo evaluate exp/bn_ft --data data/test"""
    from espzoo.decode.html_report import check_report_dir, write_html_report
    from espzoo.decode.recognizer import DecodeOptions
    from espzoo.decode.report import compare as compare_runs
    from espzoo.decode.report import evaluate as run_evaluation
    from espzoo.decode.report import load_result, with_baseline
    from espzoo.errors import EvaluateError

    if len(model) > 2 or (len(model) == 2 and compare is not None):
        raise EvaluateError("evaluate takes one model, or two to compare (before, after); drop the others.")
    if len(model) == 2 and out_dir is not None:
        raise EvaluateError("--out-dir holds one evaluation; with two models, drop it (an experiment dir's results "
                            "go to OUT/eval/<data>).")
    from espzoo.models.lm import parse_weights

    weights = parse_weights(lm_weight) if lm_weight is not None else (None,)
    options = DecodeOptions(
        beam_size=beam, ctc_weight=ctc_weight, device=device, threads=threads, jobs=jobs, decode=decode, lang=lang,
        max_segment=max_segment,
        lm=lm, lm_weight=weights[0],
    )
    if len(weights) > 1:  # LM hook: a weight sweep, one row per weight
        from espzoo.decode.report import sweep

        if len(model) > 1 or compare is not None or report is not None:
            raise EvaluateError("--lm-weight with several weights sweeps one model; drop the second model, --compare "
                                "and --report.")
        with _progress("sweeping LM weights", quiet=json) as progress:
            reports = sweep(model[0], data, weights, options=options, out_dir=out_dir, skip_bad=skip_bad,
                            audio_column=audio_column, text_column=text_column, normalizer=normalizer,
                            progress=progress)
        print_sweep(reports, weights, json=json, rows=rows)
        return
    if report is not None:
        check_report_dir(report, force=force)  # before decoding, which takes the time
    before = load_result(compare) if compare is not None else None
    results = []
    for name in model:
        with _progress(f"decoding {Path(name).name}" if len(model) > 1 else "decoding", quiet=json) as progress:
            results.append(run_evaluation(name, data, out_dir, options=options, skip_bad=skip_bad, progress=progress,
                                          audio_column=audio_column, text_column=text_column, normalizer=normalizer))
    if len(results) == 2:
        before = results[0]
    result = results[-1]
    comparison = compare_runs(before, result) if before is not None else None
    if comparison is not None:
        result = with_baseline(result, comparison)
    if report is not None:
        page = write_html_report(result, report, force=force)
    if json:
        output = result.to_dict(rows=rows)
        if len(results) == 2:
            output = {"a": results[0].to_dict(rows=rows), "b": output, "comparison": comparison.to_dict()}
        print_json(output)
        return
    for one in results:
        _print_report(one, rows=rows, titled=len(results) > 1)
    if comparison is not None:
        _print_comparison(comparison.to_dict())
    if report is not None:
        info(f"wrote the HTML report to {page}")


def _print_report(report: Any, *, rows: bool, titled: bool) -> None:
    if rows:
        print_table(
            [
                {"id": r.id, "WER %": _percent(r.word.rate), "CER %": _percent(r.char.rate),
                 "reference": r.reference, "hypothesis": r.hypothesis}
                for r in report.rows
            ],
            ["id", "WER %", "CER %", "reference", "hypothesis"],
        )
    table = []
    scores = [("WER", report.wer, report.ci95.get("wer")), ("CER", report.cer, report.ci95.get("cer"))]
    if report.normalized:
        scores += [("WER normalized", report.normalized.wer, report.normalized.ci95.get("wer")),
                   ("CER normalized", report.normalized.cer, report.normalized.ci95.get("cer"))]
    for name, score, ci in scores:
        table.append({"metric": name, "rate %": _percent(score.rate), "95% CI": _ci(ci), "errors": score.errors,
                      "S": score.substitutions, "D": score.deletions, "I": score.insertions,
                      "N": score.reference_length})
    title = f"{report.utterances} utterances, {report.audio_seconds:.1f} s of audio"
    print_table(table, ["metric", "rate %", "95% CI", "errors", "S", "D", "I", "N"],
                title=f"{report.model}: {title}" if titled else title)
    how = "greedy CTC" if report.decode == "ctc-greedy" else (
        f"beam {report.beam_size}, ctc weight {report.ctc_weight:g}"
    )
    if report.lm:
        how += f", LM {report.lm['path']} weight {report.lm['weight']:g}"
    info(
        f"{report.model} on {report.data}: {how}, {report.jobs} job(s), "
        f"real-time factor {report.real_time_factor:.2f}"
    )
    info(f"normalized by {report.normalized.normalizer if report.normalized else 'nothing (--normalizer none)'}; "
         f"intervals: bootstrap over {report.resampled}")
    if report.out_dir:
        info(f"wrote ref.trn, hyp.trn, text and result.json to {report.out_dir}")


def _print_comparison(comparison: dict[str, Any]) -> None:
    table = []
    for name in ("wer", "cer", "normalized_wer", "normalized_cer"):
        metric = comparison.get(name)
        if not isinstance(metric, dict):
            continue
        diff, ci = metric.get("difference"), metric.get("ci95")
        verdict = ""
        if ci:
            verdict = "better" if ci[1] < 0 else "worse" if ci[0] > 0 else "no clear difference"
        table.append({"metric": name.replace("_", " ").upper(), "before %": _percent(metric.get("a")),
                      "after %": _percent(metric.get("b")),
                      "after - before": "n/a" if diff is None else f"{100 * diff:+.2f}",
                      "95% CI": "" if not ci else f"{100 * ci[0]:+.2f} to {100 * ci[1]:+.2f}", "": verdict})
    print_table(table, ["metric", "before %", "after %", "after - before", "95% CI", ""],
                title=f"{comparison['b']} against {comparison['a']} ({comparison['utterances']} utterances, paired "
                f"bootstrap over {comparison['bootstrap']['over']})")


def _ci(ci: Any) -> str:
    return "" if not ci else f"{100 * ci[0]:.2f}–{100 * ci[1]:.2f}"


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
    max_segment: MaxSegmentOpt = None,
    format: FormatOpt = "txt",
    lm: LmOpt = None,
    lm_weight: LmWeightOpt = None,
    json: JsonOpt = False,
) -> None:
    """Print one transcript per audio file: path<TAB>text. Example: espzoo transcribe exp/bn_ft a.wav"""
    from espzoo.decode.recognizer import DecodeOptions
    from espzoo.decode.runner import transcribe as run_transcription
    from espzoo.models.lm import single_weight

    options = DecodeOptions(
        beam_size=beam, ctc_weight=ctc_weight, device=device, threads=threads, jobs=jobs, decode=decode, lang=lang,
        max_segment=max_segment, lm=lm, lm_weight=single_weight(lm_weight),
    )
    if format != "txt":  # times: decoded and aligned here (issue 23; espzoo.decode.align); --json stays path and text
        from espzoo.cli.align import print_timed

        print_timed(model, files, options, format)
        return
    with _progress("transcribing", quiet=json or (len(files) < 2 and not _long(files))) as progress:
        texts = run_transcription(model, files, options=options, progress=progress)
    if json:
        print_json([{"path": str(f), "text": t} for f, t in zip(files, texts, strict=True)])
        return
    for path, text in zip(files, texts, strict=True):
        typer.echo(f"{path}\t{text}")


def _long(files: list[Path]) -> bool:
    """Audio over a minute in all (long-form decoding reports seconds of audio done; espzoo.decode.longform)."""
    from espzoo.decode.longform import duration

    try:
        return sum(duration(f) for f in files) > 60.0
    except Exception:  # noqa: BLE001 - a missing or unreadable file is named when it is decoded
        return False


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
