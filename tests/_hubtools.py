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

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
ESPZOO = str(Path(sys.executable).with_name("espzoo"))
SPEECH = REPO_ROOT / "zoo" / "assets" / "speech" / "es"  # the shipped Spanish speech (train/dev/test Kaldi dirs)

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
    import numpy as np
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
