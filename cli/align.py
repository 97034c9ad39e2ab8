"""Times: `espzoo align MODEL AUDIO TEXT` (a recording and its transcript -> word and segment times), and the
timed output of `espzoo transcribe --format json|srt|vtt`.

    espzoo align exp/bn_ft interview.wav interview.txt                 # JSON: segments, words, confidence
    espzoo align exp/bn_ft interview.wav interview.txt --format srt    # subtitles
    espzoo align exp/bn_ft interview.wav interview.txt --format segments   # Kaldi segments file
    espzoo transcribe exp/bn_ft talk.wav --format vtt                  # decoded, then aligned

TEXT holds one segment a line (plain text, or `ID text` with --ids). Each line gets a confidence (the model's mean
probability of its aligned tokens); lines the audio does not seem to contain are listed as `unaligned`, and a
transcript most of whose lines match nowhere is refused. Long recordings are cut at pauses (--max-segment).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from espzoo.cli._output import print_json

FORMATS = ("json", "srt", "vtt")
ALIGN_FORMATS = (*FORMATS, "segments")


def print_timed(model: str, files: list[Path], options: Any, format: str) -> None:
    """transcribe --format json|srt|vtt: each file decoded window by window and aligned (espzoo.decode.align)."""
    from espzoo.decode.align import srt, timed_transcripts, vtt
    from espzoo.decode.recognizer import load_recognizer
    from espzoo.errors import AudioFileMissingError, EvaluateError

    if format not in FORMATS:
        raise EvaluateError(f"--format {format!r} is unknown; use txt, {', '.join(FORMATS)}.")
    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        raise AudioFileMissingError(f"no such audio file: {', '.join(missing)}; check the path.")
    if format != "json" and len(files) > 1:
        raise EvaluateError(f"--format {format} writes one file's subtitles; pass one audio file (or --format json).")
    recognizer = load_recognizer(model, options)
    timed = [(path, timed_transcripts(recognizer, path)) for path in files]
    if format == "json":
        print_json([{"path": str(path), "text": " ".join(s.text for s in segments),
                     "segments": [s.to_dict() for s in segments]} for path, segments in timed])
        return
    typer.echo((srt if format == "srt" else vtt)(timed[0][1]), nl=False)


def align(
    model: Annotated[str, typer.Argument(help="An experiment dir, a hub-layout folder or a repo id ORG/NAME[@REV].",
                                         show_default=False)],
    audio: Annotated[Path, typer.Argument(help="The recording (any format soundfile reads).", show_default=False)],
    text: Annotated[Path, typer.Argument(help="Its transcript: one segment a line.", show_default=False)],
    format: Annotated[str, typer.Option("--format", help="json, srt, vtt or segments (Kaldi).")] = "json",
    ids: Annotated[bool, typer.Option("--ids", help="Each line of TEXT starts with its segment id.")] = False,
    min_confidence: Annotated[float, typer.Option("--min-confidence", min=0.0, max=1.0,
                                                  help="Lines under this are reported as not in the audio.")] = 0.4,
    max_segment: Annotated[float | None, typer.Option(
        "--max-segment", min=1.0, max=300.0, help="Windows the model encodes at a time (default 20 s).")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N.")] = "cpu",
) -> None:
    """Align a transcript to its recording: word and segment times. Example: espzoo align exp/bn_ft a.wav a.txt"""
    from espzoo.decode.align import align_recording, kaldi_segments, srt, vtt
    from espzoo.decode.recognizer import DecodeOptions, load_recognizer
    from espzoo.errors import AlignError, AudioFileMissingError

    if format not in ALIGN_FORMATS:
        raise AlignError(f"--format {format!r} is unknown; use one of {', '.join(ALIGN_FORMATS)}.")
    for path, what in ((audio, "audio file"), (text, "transcript")):
        if not path.is_file():
            raise AudioFileMissingError(f"no such {what}: {path}; check the path.")
    try:
        lines = [line for line in text.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise AlignError(f"{text} is not UTF-8 text; convert it (iconv -t utf-8).") from None
    names = None
    if ids:
        names = [line.split(maxsplit=1)[0] for line in lines]
        lines = [(line.split(maxsplit=1) + [""])[1] for line in lines]
    recognizer = load_recognizer(model, DecodeOptions(device=device, max_segment=max_segment))
    result = align_recording(recognizer, audio, lines, ids=names, min_confidence=min_confidence)
    if format == "json":
        print_json(result.to_dict())
    elif format == "segments":
        typer.echo(kaldi_segments(result.segments, audio.stem), nl=False)
    else:
        typer.echo((srt if format == "srt" else vtt)(result.segments), nl=False)


def register(app: typer.Typer) -> None:
    app.command()(align)
