"""Helpers for the hub and mirror tests: repos laid out like ESPnet's on the Hub, and the real
huggingface_hub client run in a subprocess (it reads HF_ENDPOINT/HF_HOME/HF_HUB_OFFLINE at import)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import soundfile as sf
from _paths import SPEECH_ROOT

PYTHON = sys.executable
ESPZOO = str(Path(sys.executable).with_name("espzoo"))
SPEECH = SPEECH_ROOT / "es"  # the shipped Spanish speech (train/dev/test Kaldi dirs)

README = """---
tags:
- espnet
- audio
- automatic-speech-recognition
language: {lang}
datasets:
- {corpus}
license: cc-by-4.0
---

## ESPnet2 ASR model

### `{repo_id}`

A test model laid out as ESPnet's recipes upload them.
"""

CONFIG = """# a trimmed ESPnet ASR training config
frontend: default
frontend_conf:
    n_fft: 512
    hop_length: 160
normalize: global_mvn
normalize_conf:
    stats_file: exp/asr_stats_raw_{lang}_char/train/feats_stats.npz
encoder: conformer
encoder_conf:
    output_size: 64
    num_blocks: 2
decoder: transformer
token_type: char
bpemodel: null
token_list:
- <blank>
- <unk>
- a
- b
- exp
- <sos/eos>
"""


def make_espnet_repo(
    dest: Path,
    repo_id: str = "espzoo-test/asr_tiny",
    *,
    lang: str = "en",
    big_mb: int = 0,
    meta: bool = True,
    seed: int = 0,
) -> Path:
    """A folder laid out like an ESPnet ASR repo on the Hub. `big_mb` pads the checkpoint with that many
    MB of random floats (for the LFS redirect and range paths). Returns the repo folder."""
    import torch

    folder = dest / repo_id
    exp = folder / "exp" / f"asr_train_asr_conformer_raw_{lang}_char"
    stats = folder / "exp" / f"asr_stats_raw_{lang}_char" / "train"
    tokens = folder / "data" / f"{lang}_token_list" / "char"
    for d in (exp / "images", stats, tokens, folder / "exp" / "lm_train_lm"):
        d.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(README.format(lang=lang, corpus="tiny_corpus", repo_id=repo_id))
    (exp / "config.yaml").write_text(CONFIG.format(lang=lang))
    generator = torch.Generator().manual_seed(seed)
    state = {"encoder.embed.weight": torch.randn(16, 8, generator=generator), "ctc.ctc_lo.bias": torch.zeros(6)}
    if big_mb:
        state["encoder.pad"] = torch.randn(big_mb * 262144, generator=generator)
    torch.save(state, exp / "valid.acc.ave_10best.pth")
    torch.save({"encoder.embed.weight": torch.zeros(2)}, exp / "valid.loss.best.pth")
    torch.save({"lm.weight": torch.zeros(2)}, folder / "exp" / "lm_train_lm" / "valid.loss.ave.pth")
    (folder / "exp" / "lm_train_lm" / "config.yaml").write_text("lm: seq_rnn\n")
    (exp / "images" / "loss.png").write_bytes(b"\x89PNG not really")
    (tokens / "tokens.txt").write_text("<blank>\n<unk>\na\nb\nexp\n<sos/eos>\n")
    np.savez(stats / "feats_stats.npz", count=np.array(10), sum=np.zeros(80), sum_square=np.ones(80))
    if meta:
        (folder / "meta.yaml").write_text(
            "espnet: '202511'\nfiles:\n"
            f"  asr_model_file: exp/asr_train_asr_conformer_raw_{lang}_char/valid.acc.ave_10best.pth\n"
            "python: 3.11\ntimestamp: 1700000000.0\ntorch: 2.11.0\nyaml_files:\n"
            f"  asr_train_config: exp/asr_train_asr_conformer_raw_{lang}_char/config.yaml\n"
        )
    return folder


def client_env(endpoint: str, hf_home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_ENDPOINT=endpoint, HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_ETAG_TIMEOUT="5", HF_HUB_DOWNLOAD_TIMEOUT="10",
    )
    env.pop("HF_HUB_CACHE", None)
    env.pop("HF_TOKEN", None)
    env.update(extra)
    return env


def run_client(code: str, endpoint: str, hf_home: Path, timeout: float = 120, **extra: str) -> object:
    """Run `code` (which sets `result`) in a fresh Python with huggingface_hub pointed at the endpoint;
    returns `result` decoded from JSON. Raises with the child's stderr on failure."""
    script = "import json\n" + textwrap.dedent(code) + "\nprint('<<RESULT>>' + json.dumps(result, default=str))\n"
    proc = subprocess.run(
        [PYTHON, "-c", script], env=client_env(endpoint, hf_home, **extra), capture_output=True, text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(f"client failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("<<RESULT>>"))
    return json.loads(line[len("<<RESULT>>"):])


def run_espzoo(args: list[str], endpoint: str, hf_home: Path, timeout: float = 120, **extra: str):
    """The installed console script, as a user runs it."""
    return subprocess.run(
        [ESPZOO, *args], env=client_env(endpoint, hf_home, **extra), capture_output=True, text=True, timeout=timeout
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def subset(source: Path, dest: Path, n: int, files: tuple[str, ...] = ("text", "wav.scp", "utt2spk")) -> Path:
    """The first n utterances of a Kaldi dir (its `files`), audio paths made absolute."""
    dest.mkdir(parents=True)
    ids = [line.split(maxsplit=1)[0] for line in (source / "text").read_text(encoding="utf-8").splitlines()[:n]]
    for name in files:
        rows = dict(line.split(maxsplit=1) for line in (source / name).read_text(encoding="utf-8").splitlines())
        value = (lambda v: str((source / v).resolve())) if name == "wav.scp" else (lambda v: v)
        (dest / name).write_text("".join(f"{u} {value(rows[u])}\n" for u in ids), encoding="utf-8")
    return dest


# Sentence-cased and punctuated, as Common Voice writes them; the opening quote must not start CSV quoting.
CV_SENTENCES = ['"Sí", dijo el camión.', "¿Dónde está el café?", "El salón — aquí; «ahí».", "Hola,  mundo!",
                "O'Brien llegó a las 8:00.", "Fin."]


def common_voice(root: Path, split: str = "train", n: int = 6) -> Path:
    """A Common Voice release folder as downloaded: cv-corpus-X/es/{SPLIT}.tsv naming bare MP3 file names (48 kHz)
    that lie in clips/ beside it."""
    lang = root / "cv-corpus-99.0" / "es"
    lines = ["\t".join(CV_HEADER)]
    for i, source in enumerate(es_files(n, "train" if split == "train" else "dev")):
        name = f"common_voice_es_{split}{i}.mp3"
        as_mp3_48k(source, lang / "clips" / name)
        lines.append("\t".join([f"client{i % 2}", name, str(i), CV_SENTENCES[i % len(CV_SENTENCES)], "", "2", "0",
                                "", "", "", "", "es", ""]))
    (lang / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lang


def espnet_transcripts(export: Path, variant: str, lang: str, audio: list[Path]) -> list[str]:
    """ESPnet's own S2T inference from the exported files alone (its own loader; run in the repo folder)."""
    script = f"""
import json, sys, soundfile, numpy as np
meta = __import__("yaml").safe_load(open("meta.yaml"))
config, model = meta["yaml_files"]["s2t_train_config"], meta["files"]["s2t_model_file"]
if {variant!r} == "s2t_ctc":
    from espzoo.models.compat import s2t_ctc_greedy  # ESPnet's own greedy decoder of this release
    s = s2t_ctc_greedy(config, model, lang_sym={lang!r}, task_sym="<asr>")
    conf = s.preprocessor_conf
    pad = lambda w: np.pad(w, (0, max(0, int(conf["fs"] * conf["speech_length"]) - len(w))))
else:
    from espnet2.bin.s2t_inference import Speech2Text as S
    s = S(config, model, lang_sym={lang!r}, task_sym="<asr>", beam_size=4, ctc_weight=0.3)
    pad = lambda w: w
out = []
for path in {[str(a) for a in audio]!r}:
    wave, _ = soundfile.read(path, dtype="float32")
    out.append(s(pad(wave))[0][3])
print("<<R>>" + json.dumps(out))
"""
    from espzoo.models.espnet_env import espnet_env

    proc = subprocess.run([sys.executable, "-c", script], cwd=export,
                          env=espnet_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("<<R>>"))
    return [t.strip() for t in json.loads(line[5:])]


CV_HEADER = ("client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes", "down_votes", "age",
             "gender", "accents", "variant", "locale", "segment")


def es_files(n: int, split: str = "train") -> list[Path]:
    rows = (SPEECH_ROOT / "es" / split / "wav.scp").read_text().splitlines()[:n]
    return [SPEECH_ROOT / "es" / split / line.split()[1] for line in rows]


def as_mp3_48k(source: Path, target: Path) -> None:
    import soxr

    audio, rate = sf.read(str(source), dtype="float32")
    target.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(target), soxr.resample(audio, rate, 48000), 48000, format="MP3")
