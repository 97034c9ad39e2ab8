"""Synthesize the small speech sets shipped in the package (English and Spanish), with espeak-ng.

    python scripts/make_speech.py            # rewrites zoo/assets/speech/{en,es}/
    python scripts/make_speech.py --check    # synthesizes into a temp dir and compares with what is committed

Sentences come from fixed word lists and a seeded generator, so the same espeak-ng gives the same
files. espeak-ng is not installed on CI: the output is committed, this script is how it was made.
It also makes the demo model's English training corpus (write_english_corpus, called by
scripts/make_demo_model.py; not shipped) from the standard library's docstrings.

Layout, one Kaldi data dir per split (paths in wav.scp and manifest.tsv are relative to the split dir):

    zoo/assets/speech/<lang>/<split>/{text,wav.scp,utt2spk,manifest.tsv}
    zoo/assets/speech/<lang>/<split>/audio/<utt>.flac     16 kHz mono 16-bit FLAC
"""

from __future__ import annotations

import argparse
import io
import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16000
# Samples keep their top 10 bits (~60 dB SNR, far above what ASR notices); FLAC stores the zeroed low
# bits for free, which halves the committed size.
KEPT_BITS = 10
ASSETS = Path(__file__).resolve().parent.parent / "zoo" / "assets" / "speech"


@dataclass(frozen=True)
class Voice:
    """One espeak-ng speaker: a voice+variant, a speed (words/min) and a pitch (0-99)."""

    speaker: str
    voice: str
    speed: int
    pitch: int


@dataclass(frozen=True)
class LanguageSet:
    lang: str
    seed: int
    splits: dict[str, int]
    voices: tuple[Voice, ...]
    parts: tuple[tuple[str, ...], ...]  # sentence = one choice from each part ("" = leave out)


ENGLISH = LanguageSet(
    lang="en",
    seed=1,
    splits={"train": 130, "dev": 10, "test": 10},
    voices=(
        Voice("usm3", "en-us+m3", 165, 45),
        Voice("usf2", "en-us+f2", 155, 60),
        Voice("gbm1", "en-gb+m1", 175, 40),
        Voice("gbf4", "en-gb+f4", 150, 55),
        Voice("scm2", "en-gb-scotland+m2", 160, 50),
        Voice("caf3", "en-029+f3", 170, 65),
    ),
    parts=(
        (
            "the old man", "a small dog", "my sister", "the teacher", "our neighbor", "the black cat",
            "a young girl", "his brother", "the farmer", "that boy", "the quiet child", "her friend",
            "the doctor", "a tall woman", "the baker", "your uncle", "the busy driver", "we",
        ),
        (
            "reads a book", "walks home", "drinks cold water", "paints the fence", "finds the key",
            "sings a song", "cooks dinner", "fixes the clock", "writes a letter", "opens the window",
            "plays the piano", "watches the sky", "buys fresh bread", "waits for the bus", "likes jazz",
            "climbs the hill", "feeds the birds", "cleans the kitchen", "carries a box", "jumps high",
        ),
        (
            "", "", "every morning", "after lunch", "at night", "on sunday", "in the park", "by the river",
            "very slowly", "again today", "near the school", "with care", "before dawn", "quickly",
        ),
    ),
)

SPANISH = LanguageSet(
    lang="es",
    seed=2,
    splits={"train": 90, "dev": 15, "test": 15},
    voices=(
        Voice("esm1", "es+m1", 160, 45),
        Voice("esf2", "es+f2", 150, 60),
        Voice("lam4", "es-419+m4", 170, 40),
        Voice("laf4", "es-419+f4", 155, 55),
    ),
    parts=(
        (
            "el niño", "la señora", "mi abuela", "el camión", "la niña", "el pájaro", "nuestro vecino",
            "la música", "el médico", "tu hermano", "la canción", "el árbol", "el ratón", "la jefa",
            "aquel joven", "la luz", "el café", "mi compañero",
        ),
        (
            "está aquí", "llegó tarde", "come pan", "canta también", "corre rápido", "duerme mucho",
            "bebe agua fría", "abrió la ventana", "no tiene miedo", "vive en españa", "habla inglés",
            "parece más fácil", "sigue allí", "lee un periódico", "espera el autobús", "sonríe",
        ),
        (
            "", "", "por la mañana", "después del almuerzo", "en el jardín", "hoy", "cada día",
            "según dicen", "todavía", "en el salón", "junto al río", "a las ocho", "sin razón",
        ),
    ),
)


@dataclass(frozen=True)
class Utterance:
    utt_id: str
    speaker: Voice
    text: str


def make_sentences(spec: LanguageSet) -> list[str]:
    """Distinct sentences, in a fixed order, from the seeded generator."""
    rng = random.Random(spec.seed)
    total = sum(spec.splits.values())
    seen: list[str] = []
    while len(seen) < total:
        words = " ".join(w for w in (rng.choice(part) for part in spec.parts) if w)
        if words not in seen:
            seen.append(words)
    return seen


def plan_utterances(spec: LanguageSet) -> dict[str, list[Utterance]]:
    """Sentences dealt to splits and to speakers round-robin; ids start with the speaker (Kaldi sorting)."""
    sentences = make_sentences(spec)
    out: dict[str, list[Utterance]] = {}
    index = 0
    for split, count in spec.splits.items():
        utts = []
        for _ in range(count):
            voice = spec.voices[index % len(spec.voices)]
            utts.append(Utterance(f"{voice.speaker}-{spec.lang}{index:04d}", voice, sentences[index]))
            index += 1
        out[split] = sorted(utts, key=lambda u: u.utt_id)
    return out


def synthesize(utt: Utterance) -> np.ndarray:
    """espeak-ng's 22.05 kHz output as 16 kHz int16 (10 significant bits), silence at the ends cut to 0.1 s."""
    v = utt.speaker
    cmd = ["espeak-ng", "-v", v.voice, "-s", str(v.speed), "-p", str(v.pitch), "--stdout", utt.text]
    wav = subprocess.run(cmd, check=True, capture_output=True, timeout=60).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    audio = soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ")
    voiced = np.flatnonzero(np.abs(audio) > 0.01)
    pad = SAMPLE_RATE // 10
    audio = audio[max(voiced[0] - pad, 0) : voiced[-1] + pad]
    step = 2 ** (16 - KEPT_BITS)
    return (np.clip(np.round(audio * 32767 / step), -32768 // step, 32767 // step) * step).astype(np.int16)


def write_split(dest: Path, utts: list[Utterance], jobs: int = 1) -> float:
    """One Kaldi data dir; returns its total audio seconds. `jobs` espeak-ng processes at a time (same files)."""
    from concurrent.futures import ThreadPoolExecutor

    (dest / "audio").mkdir(parents=True)
    seconds = 0.0
    with ThreadPoolExecutor(jobs) as pool:
        audios = list(pool.map(synthesize, utts))
    for utt, audio in zip(utts, audios, strict=True):
        seconds += len(audio) / SAMPLE_RATE
        sf.write(dest / "audio" / f"{utt.utt_id}.flac", audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    (dest / "text").write_text("".join(f"{u.utt_id} {u.text}\n" for u in utts), encoding="utf-8")
    (dest / "wav.scp").write_text("".join(f"{u.utt_id} audio/{u.utt_id}.flac\n" for u in utts))
    (dest / "utt2spk").write_text("".join(f"{u.utt_id} {u.speaker.speaker}\n" for u in utts))
    rows = "".join(f"{u.utt_id}\taudio/{u.utt_id}.flac\t{u.text}\n" for u in utts)
    (dest / "manifest.tsv").write_text("id\taudio\ttext\n" + rows, encoding="utf-8")
    return seconds


def write_extra(spec: LanguageSet, count: int, dest: Path) -> Path:
    """A Kaldi data dir of `count` further utterances of `spec`, not shipped: the seeded generator's sentences
    after the committed ones (so none repeats a committed sentence), dealt to the same voices. For a test set
    larger than the package's (bench/transfer_quality.py); `dest` is replaced whole."""
    import dataclasses

    utts = plan_utterances(dataclasses.replace(spec, splits={**spec.splits, "extra": count}))["extra"]
    if dest.exists():
        shutil.rmtree(dest)
    write_split(dest, utts)
    return dest


# ------------------------------------------------------------------------------ the demo model's English corpus
# Not shipped: scripts/make_demo_model.py synthesizes it into a scratch dir and trains the demo model on it. Its
# sentences are real English prose, so the model learns sounds -> letters rather than the ~60 words of the
# committed set: the prose sentences of the docstrings of the running Python's standard library (present wherever
# Python is, offline; the same Python and espeak-ng give the same corpus).
CORPUS_SEED = 3
CORPUS_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-us-nyc", "en-gb-x-gbclan",
                 "en-gb-x-gbcwmd")
CORPUS_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
# Skipped: tests, GUI and demo code, whose docstrings are mostly names.
_SKIPPED_STDLIB = {"test", "tests", "site-packages", "dist-packages", "idlelib", "lib2to3", "tkinter", "turtledemo"}


def stdlib_sentences() -> list[str]:
    """Distinct sentences of 4-14 plain words from the standard library's docstrings, lowercased, punctuation
    dropped; sentences with digits, symbols or code-like words are left out (the char vocabulary is a-z)."""
    import ast
    import re
    import sysconfig

    lib = Path(sysconfig.get_paths()["stdlib"])
    found: set[str] = set()
    for path in sorted(lib.rglob("*.py")):
        if _SKIPPED_STDLIB & set(path.relative_to(lib).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            doc = ast.get_docstring(node) or ""
            # Indented lines are code samples and tables, not prose.
            prose = " ".join(line for line in doc.splitlines() if not line.startswith((" ", "\t", ">>>")))
            for sentence in re.split(r"(?<=[.!?])\s+", prose):
                words = re.sub(r"[,;:]", " ", sentence.strip().rstrip(".!?")).split()
                if 4 <= len(words) <= 14 and all(re.fullmatch(r"[A-Za-z]+", w) for w in words):
                    found.add(" ".join(words).lower())
    return sorted(found)


def corpus_voice(rng: random.Random) -> Voice:
    """A random English espeak-ng speaker: accent, variant, speed 130-190 words/min, pitch 25-75."""
    accent, variant = rng.choice(CORPUS_VOICES), rng.choice(CORPUS_VARIANTS)
    speed, pitch = rng.randrange(130, 191, 5), rng.randrange(25, 76, 5)
    return Voice(f"{accent.replace('-', '')}{variant}s{speed}p{pitch}", f"{accent}+{variant}", speed, pitch)


def plan_english_corpus(splits: dict[str, int], seed: int = CORPUS_SEED) -> dict[str, list[Utterance]]:
    """Sentences shuffled by `seed` and dealt to splits in order (no sentence in two splits), each with its own
    random speaker; ids start with the speaker (Kaldi sorting)."""
    rng = random.Random(seed)
    sentences = stdlib_sentences()
    if sum(splits.values()) > len(sentences):
        sys.exit(f"make_speech: the corpus has {len(sentences)} sentences; ask for at most that many utterances.")
    rng.shuffle(sentences)
    out: dict[str, list[Utterance]] = {}
    index = 0
    for split, count in splits.items():
        utts = []
        for _ in range(count):
            voice = corpus_voice(rng)
            utts.append(Utterance(f"{voice.speaker}-c{index:05d}", voice, sentences[index]))
            index += 1
        out[split] = sorted(utts, key=lambda u: u.utt_id)
    return out


def write_english_corpus(dest: Path, splits: dict[str, int], jobs: int = 2) -> dict[str, float]:
    """The corpus as one Kaldi data dir per split under `dest` (replaced whole); returns seconds of audio per split.
    `jobs` espeak-ng processes run at a time."""
    if dest.exists():
        shutil.rmtree(dest)
    return {split: write_split(dest / split, utts, jobs) for split, utts in plan_english_corpus(splits).items()}


def build(root: Path) -> None:
    for spec in (ENGLISH, SPANISH):
        for split, utts in plan_utterances(spec).items():
            seconds = write_split(root / spec.lang / split, utts)
            print(f"{spec.lang}/{split}: {len(utts)} utterances, {seconds:.1f} s", file=sys.stderr)


def same_tree(a: Path, b: Path) -> bool:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return files_a == files_b and all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare a fresh build with the committed files")
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng is not installed; install it (apt-get install espeak-ng) to rebuild the speech assets.")
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "speech"
        build(fresh)
        if args.check:
            ok = same_tree(fresh, ASSETS)
            print("identical" if ok else "DIFFERENT from the committed files")
            sys.exit(0 if ok else 1)
        for lang in ("en", "es"):
            # Replace each language folder whole, so no stale file from an earlier build survives.
            target = ASSETS / lang
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(fresh / lang, target)
    print(f"wrote {ASSETS}", file=sys.stderr)


if __name__ == "__main__":
    main()
