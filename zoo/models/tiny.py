"""The tiny real ESPnet ASR model: its config (one home), and the code that trains it with ESPnet and lays it out as
a Hub repo. The shipped demo model (scripts/make_demo_model.py) and the test fixtures (tests/fixtures/make_tiny_repo.py)
are built by it; bench/finetune.py and tests/test_trainer.py train the same architecture.

    from espzoo.models.tiny import TINY_ASR_CONFIG, Recipe, train_tiny_asr, write_hub_repo
    model = train_tiny_asr(Recipe("char", "exp/asr_x", "exp/asr_stats", "data/token_list/char"), work)
    write_hub_repo(model, dest, repo_id="org/tiny")

Private to espzoo's own tooling: it imports ESPnet (through espzoo.models.espnet_env) only when training.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from espzoo.utils.fs import replace_dir
from espzoo.utils.home import PACKAGE_ROOT

SPEECH = PACKAGE_ROOT / "assets" / "speech"  # committed espeak-ng speech, per language

# The tiny architecture: small enough to train in seconds on 2 CPU cores, real enough to exercise every
# part a hub conformer has (conv2d subsampling, rel-pos attention, macaron FFN, conv module, CTC + attention).
TINY_ASR_CONFIG: dict = {
    "encoder": "conformer",
    "encoder_conf": {
        "output_size": 64,
        "attention_heads": 2,
        "linear_units": 128,
        "num_blocks": 2,
        "dropout_rate": 0.1,
        "positional_dropout_rate": 0.1,
        "attention_dropout_rate": 0.1,
        "input_layer": "conv2d",
        "normalize_before": True,
        "macaron_style": True,
        "rel_pos_type": "latest",
        "pos_enc_layer_type": "rel_pos",
        "selfattention_layer_type": "rel_selfattn",
        "activation_type": "swish",
        "use_cnn_module": True,
        "cnn_module_kernel": 15,
    },
    "decoder": "transformer",
    "decoder_conf": {
        "attention_heads": 2,
        "linear_units": 128,
        "num_blocks": 1,
        "dropout_rate": 0.1,
        "positional_dropout_rate": 0.1,
        "self_attention_dropout_rate": 0.1,
        "src_attention_dropout_rate": 0.1,
    },
    "model_conf": {"ctc_weight": 0.3, "lsm_weight": 0.1, "length_normalized_loss": False},
    "frontend_conf": {"n_fft": 512, "hop_length": 160},
    "optim": "adam",
    "optim_conf": {"lr": 0.004},
    "scheduler": "warmuplr",
    "scheduler_conf": {"warmup_steps": 30},
    "batch_type": "numel",
    "batch_bins": 320000,
    "accum_grad": 1,
    "grad_clip": 5,
    "best_model_criterion": [["valid", "acc", "max"]],
}


@dataclass(frozen=True)
class Recipe:
    """One ESPnet training run, with the folder names ESPnet's asr.sh would give it (relative to its cwd)."""

    token_type: str  # "char" or "bpe"
    exp_dir: str
    stats_dir: str
    token_dir: str  # holds tokens.txt (and bpe.model)
    nbpe: int = 30
    max_epoch: int = 3
    keep_nbest: int = 2
    train_sets: tuple[str, ...] = ("train",)
    valid_set: str = "dev"
    lang: str = "en"
    seed: int = 0
    config_overrides: dict = field(default_factory=dict)

    @property
    def checkpoint_name(self) -> str:
        return f"valid.acc.ave_{self.keep_nbest}best.pth"

    @property
    def token_tag(self) -> str:
        return "char" if self.token_type == "char" else f"bpe{self.nbpe}"


@dataclass(frozen=True)
class TrainedModel:
    """What one ESPnet run left in `work` (all paths relative to it, as in its config.yaml)."""

    work: Path
    recipe: Recipe
    seconds: float

    @property
    def files(self) -> dict[str, str]:
        """Hub-repo files: relative path in the repo -> path under `work` (symlinks resolved on copy)."""
        r = self.recipe
        files = {
            f"{r.exp_dir}/config.yaml": f"{r.exp_dir}/config.yaml",
            f"{r.exp_dir}/{r.checkpoint_name}": f"{r.exp_dir}/{r.checkpoint_name}",
            f"{r.stats_dir}/train/feats_stats.npz": f"{r.stats_dir}/train/feats_stats.npz",
            f"{r.token_dir}/tokens.txt": f"{r.token_dir}/tokens.txt",
        }
        if r.token_type == "bpe":
            files[f"{r.token_dir}/bpe.model"] = f"{r.token_dir}/bpe.model"
        return files


# ----------------------------------------------------------------------------------------------- training


def _espnet(args: list[str], cwd: Path, log: Path) -> None:
    """Run `python -m <espnet module> ...` in `cwd`; on failure, show the end of its log."""
    from espzoo.models.espnet_env import espnet_env

    env = espnet_env()
    env.setdefault("OMP_NUM_THREADS", "2")
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(args)}\n")
        out.flush()
        proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, stdout=out, stderr=out)
    if proc.returncode != 0:
        tail = "".join(log.read_text(encoding="utf-8").splitlines(keepends=True)[-40:])
        raise RuntimeError(f"ESPnet step `{args[0]}` failed (exit {proc.returncode}); log {log}:\n{tail}")


def _write_data_dir(src: Path, dest: Path) -> None:
    """A Kaldi dir as asr.sh's dump/raw has it; wav.scp gets absolute paths to the committed FLAC files."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("text", "utt2spk"):
        shutil.copyfile(src / name, dest / name)
    lines = []
    for line in (src / "wav.scp").read_text().splitlines():
        utt, path = line.split(maxsplit=1)
        lines.append(f"{utt} {(src / path).resolve()}\n")
    (dest / "wav.scp").write_text("".join(lines))


def _merge_data_dirs(srcs: list[Path], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("text", "utt2spk", "wav.scp"):
        rows = sorted(line for s in srcs for line in (s / name).read_text(encoding="utf-8").splitlines())
        (dest / name).write_text("".join(f"{r}\n" for r in rows), encoding="utf-8")


def train_tiny_asr(recipe: Recipe, work: Path) -> TrainedModel:
    """Train one model with ESPnet in `work` the way egs2/*/asr1/asr.sh does: tokens, stats, train, average."""
    start = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "build.log"
    r = recipe
    parts = []
    for split in (*r.train_sets, r.valid_set):
        _write_data_dir(SPEECH / r.lang / split, work / "dump/raw/parts" / split)
        parts.append(work / "dump/raw/parts" / split)
    _merge_data_dirs(parts[: len(r.train_sets)], work / "dump/raw/train")
    _merge_data_dirs(parts[len(r.train_sets) :], work / "dump/raw/dev")
    train_text = work / "dump/raw/train/text"

    token_dir = work / r.token_dir
    token_dir.mkdir(parents=True, exist_ok=True)
    token_args = ["--token_type", r.token_type]
    if r.token_type == "bpe":
        import sentencepiece as spm

        texts = [line.split(maxsplit=1)[1] for line in train_text.read_text(encoding="utf-8").splitlines()]
        (token_dir / "train.txt").write_text("".join(f"{t}\n" for t in texts), encoding="utf-8")
        # asr.sh's spm_train options (espnet2.bin.spm_train is a thin wrapper around this call).
        spm.SentencePieceTrainer.train(
            input=str(token_dir / "train.txt"),
            vocab_size=r.nbpe,
            model_type="unigram",
            model_prefix=str(token_dir / "bpe"),
            character_coverage=1.0,
            input_sentence_size=100000000,
            minloglevel=2,
        )
        (token_dir / "train.txt").unlink()
        (token_dir / "bpe.vocab").unlink()
        token_args += ["--bpemodel", f"{r.token_dir}/bpe.model"]
    _espnet(
        [
            "espnet2.bin.tokenize_text",
            *token_args,
            "--input", "dump/raw/train/text",
            "--output", f"{r.token_dir}/tokens.txt",
            "--field", "2-",
            "--cleaner", "none",
            "--g2p", "none",
            "--write_vocabulary", "true",
            "--add_symbol", "<blank>:0",
            "--add_symbol", "<unk>:1",
            "--add_symbol", "<sos/eos>:-1",
        ],
        work,
        log,
    )

    conf = {**TINY_ASR_CONFIG, **r.config_overrides}
    (work / "conf").mkdir(exist_ok=True)
    (work / "conf/train_asr_conformer_tiny.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    common = [
        "--use_preprocessor", "true",
        *token_args,
        "--token_list", f"{r.token_dir}/tokens.txt",
        "--non_linguistic_symbols", "none",
        "--cleaner", "none",
        "--g2p", "none",
        "--config", "conf/train_asr_conformer_tiny.yaml",
        "--frontend_conf", "fs=16k",
        "--train_data_path_and_name_and_type", "dump/raw/train/wav.scp,speech,sound",
        "--train_data_path_and_name_and_type", "dump/raw/train/text,text,text",
        "--valid_data_path_and_name_and_type", "dump/raw/dev/wav.scp,speech,sound",
        "--valid_data_path_and_name_and_type", "dump/raw/dev/text,text,text",
        "--ngpu", "0",
        "--num_workers", "0",
        "--seed", str(r.seed),
        "--use_tensorboard", "false",
        "--use_matplotlib", "false",
        "--use_wandb", "false",
    ]
    _espnet(
        [
            "espnet2.bin.asr_train",
            "--collect_stats", "true",
            *common,
            "--batch_type", "unsorted",
            "--batch_size", "16",
            "--train_shape_file", "dump/raw/train/wav.scp",
            "--valid_shape_file", "dump/raw/dev/wav.scp",
            "--output_dir", r.stats_dir,
        ],
        work,
        log,
    )
    # asr.sh appends the vocabulary size to each text shape (the numel batcher needs both dims).
    vocab_size = len((work / r.token_dir / "tokens.txt").read_text(encoding="utf-8").splitlines())
    for split in ("train", "valid"):
        shapes = (work / r.stats_dir / split / "text_shape").read_text().splitlines()
        shaped = "".join(f"{line},{vocab_size}\n" for line in shapes)
        (work / r.stats_dir / split / f"text_shape.{r.token_tag}").write_text(shaped)
    _espnet(
        [
            "espnet2.bin.asr_train",
            *common,
            "--normalize", "global_mvn",
            "--normalize_conf", f"stats_file={r.stats_dir}/train/feats_stats.npz",
            "--train_shape_file", f"{r.stats_dir}/train/speech_shape",
            "--train_shape_file", f"{r.stats_dir}/train/text_shape.{r.token_tag}",
            "--valid_shape_file", f"{r.stats_dir}/valid/speech_shape",
            "--valid_shape_file", f"{r.stats_dir}/valid/text_shape.{r.token_tag}",
            "--max_epoch", str(r.max_epoch),
            "--keep_nbest_models", str(r.keep_nbest),
            "--num_att_plot", "0",
            "--resume", "true",
            "--output_dir", r.exp_dir,
        ],
        work,
        log,
    )
    return TrainedModel(work=work, recipe=recipe, seconds=time.perf_counter() - start)

# ------------------------------------------------------------------------------------------------- layout


def readme_text(repo_id: str, model: TrainedModel, config_text: str, *, datasets: bool, results: str = "") -> str:
    """A README shaped like ESPnet's hub model cards: front matter, usage, results, the whole config."""
    r = model.recipe
    front = ["---", "tags:", "- espnet", "- audio", "- automatic-speech-recognition", f"language: {r.lang}"]
    if datasets:
        front += ["datasets:", f"- espzoo_speech_{r.lang}"]
    front += ["license: cc-by-4.0", "---", ""]
    tokens = "characters" if r.token_type == "char" else f"a sentencepiece unigram vocabulary of {r.nbpe}"
    body = f"""## ESPnet2 ASR model

### `{repo_id}`

A tiny conformer (2 blocks, d=64) trained with ESPnet's `espnet2.bin.asr_train` for {r.max_epoch} epochs
on espzoo's synthesized speech (language `{r.lang}`, sets {"+".join(r.train_sets)}, valid {r.valid_set}),
with {tokens} as tokens. It exists to test and demonstrate espzoo.

### Demo: How to use in ESPnet2

```bash
espzoo pull {repo_id}
espzoo transcribe {repo_id} audio.wav
```
{results}
## ASR config

<details><summary>expand</summary>

```
{config_text.rstrip()}
```

</details>
"""
    return "\n".join(front) + body


def meta_yaml(model: TrainedModel, files: dict[str, str], timestamp: float | None = None) -> str:
    """meta.yaml as espnet_model_zoo's pack writes it (espnet2/main_funcs/pack_funcs.py)."""
    import espnet
    import torch

    r = model.recipe
    meta = {
        "files": {"asr_model_file": files[f"{r.exp_dir}/{r.checkpoint_name}"]},
        "yaml_files": {"asr_train_config": files[f"{r.exp_dir}/config.yaml"]},
        "timestamp": time.time() if timestamp is None else timestamp,
        "python": sys.version,
        "torch": str(torch.__version__),
        "espnet": espnet.__version__,
    }
    return yaml.safe_dump(meta)


def write_hub_repo(
    model: TrainedModel,
    dest: Path,
    *,
    repo_id: str,
    with_meta: bool = True,
    renames: dict[str, str] | None = None,
    results: str = "",
) -> Path:
    """Lay `model` out as a hub repo at `dest` (written under a temp name, renamed when complete).

    `renames` moves folders (old prefix -> new prefix) and rewrites the same prefixes inside config.yaml,
    giving exactly the config ESPnet would have written had the run used those folder names.
    """
    renames = renames or {}

    def moved(rel: str) -> str:
        for old, new in renames.items():
            if rel == old or rel.startswith(old + "/"):
                return new + rel[len(old) :]
        return rel

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    files = {rel: moved(rel) for rel in model.files}
    for rel, src in model.files.items():
        target = tmp / files[rel]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile((model.work / src).resolve(), target)
    r = model.recipe
    config_path = tmp / files[f"{r.exp_dir}/config.yaml"]
    text = config_path.read_text(encoding="utf-8")
    for old, new in renames.items():
        text = text.replace(f" {old}/", f" {new}/").replace(f" {old}\n", f" {new}\n")
    config_path.write_text(text, encoding="utf-8")
    if with_meta:
        (tmp / "meta.yaml").write_text(meta_yaml(model, files), encoding="utf-8")
    readme = readme_text(repo_id, model, text, datasets=with_meta, results=results)
    (tmp / "README.md").write_text(readme, encoding="utf-8")
    return replace_dir(tmp, dest)

