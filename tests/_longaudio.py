"""Long recordings built from the shipped speech clips (zoo/assets/speech): clips joined with pauses, so that
where each utterance starts and ends, and what it says, is known."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPEECH = Path(__file__).resolve().parent.parent / "zoo" / "assets" / "speech"


@dataclass(frozen=True)
class Joined:
    path: Path
    ids: list[str]
    texts: list[str]
    starts: list[float]  # seconds: where each clip begins in the file
    ends: list[float]
    seconds: float


def clips(lang: str = "en", split: str = "train") -> list[tuple[str, Path, str]]:
    """(id, audio, text) of a shipped set, in id order."""
    root = SPEECH / lang / split
    texts = dict(line.split(" ", 1) for line in (root / "text").read_text(encoding="utf-8").splitlines() if line)
    return [(utt, root / "audio" / f"{utt}.flac", texts[utt]) for utt in sorted(texts)]


def join(dest: Path, chosen: list[tuple[str, Path, str]], *, pause: float = 0.5, lead: float = 0.3,
         repeat: int = 1) -> Joined:
    """`chosen` clips (`repeat` times over) one after the other with `pause` s of silence (a little noise) between."""
    import soundfile

    rng = np.random.default_rng(0)
    parts: list[np.ndarray] = []
    ids, texts, starts, ends = [], [], [], []
    rate = 16000
    position = 0
    gap = lambda seconds: (rng.standard_normal(int(seconds * rate)) * 1e-4).astype("float32")  # noqa: E731
    parts.append(gap(lead))
    position += len(parts[-1])
    for _ in range(repeat):
        for utt, audio, text in chosen:
            wave, rate_read = soundfile.read(str(audio), dtype="float32")
            assert rate_read == rate
            ids.append(utt)
            texts.append(text)
            starts.append(position / rate)
            parts.append(wave)
            position += len(wave)
            ends.append(position / rate)
            parts.append(gap(pause))
            position += len(parts[-1])
    soundfile.write(str(dest), np.concatenate(parts), rate)
    return Joined(dest, ids, texts, starts, ends, position / rate)
