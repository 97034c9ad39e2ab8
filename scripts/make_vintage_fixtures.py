"""Build tiny ESPnet ASR models with an OLD ESPnet release and lay them out as Hub repos (issue 21, item 4).

Every model on the Hub was saved by ESPnet <= 202511; the tests' other fixtures are saved by the ESPnet that runs
the test, so they never show what an old checkpoint looks like to a new ESPnet (renamed tensors, config choices
that were removed, tensors that nothing uses). These fixtures are saved by the old releases themselves.

Run by hand (never by CI), with the Python of a venv that has the old ESPnet installed:

    /work/oldenv/e202402/bin/python scripts/make_vintage_fixtures.py --out tests/fixtures/vintage
    /work/oldenv/e202204/bin/python scripts/make_vintage_fixtures.py --out tests/fixtures/vintage --families rnn,ctc

Each model is trained by that ESPnet's own CLI (`python -m espnet2.bin.tokenize_text`, `espnet2.bin.asr_train`
--collect_stats, `espnet2.bin.asr_train`), packed by its own `python -m espnet2.bin.pack asr` (as asr.sh's
packing stage does) and unpacked into <out>/<release>-<family>/ as the Hub upload stage does, with a model card.
The checkpoint in the repo is the file that trainer wrote, byte for byte.

Standalone on purpose: it runs on Python 3.8-3.10 inside an old venv, where espzoo (Python 3.11+) cannot be
imported, so it uses only the standard library, PyYAML and the old ESPnet. Keep it Python 3.8 syntax.
"""

from __future__ import annotations

import argparse
import inspect
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
SPEECH = REPO_ROOT / "zoo" / "assets" / "speech" / "en"  # the committed espeak-ng English clips
N_TRAIN = 40  # a few clips: the models only have to be real ESPnet checkpoints, not good ones
N_VALID = 10
MAX_EPOCH = 2

FAMILIES = ("conformer", "transformer", "e_branchformer", "rnn", "ctc")

# What every family shares, from the egs2 recipe configs of these releases (an4, librispeech_100) scaled down.
# n_fft/hop_length as the librispeech_100 configs set them; 80 mel bins (ESPnet's default) kept, so the conv2d
# subsampling's output projection has the real input width (19 * output_size). d=16 keeps each checkpoint
# near 200 KB (the frontend's 257x80 mel matrix, saved as a buffer by some releases, is 80 KB of it).
COMMON = {
    "frontend_conf": {"n_fft": 512, "hop_length": 160},
    "batch_type": "numel",
    "batch_bins": 400000,
    "accum_grad": 1,
    "patience": None,
    "optim": "adam",
    "optim_conf": {"lr": 0.002},
    "scheduler": "warmuplr",
    "scheduler_conf": {"warmup_steps": 25},
}

TRANSFORMER_DECODER = {
    "decoder": "transformer",
    "decoder_conf": {
        "attention_heads": 2,
        "linear_units": 64,
        "num_blocks": 1,
        "dropout_rate": 0.1,
        "positional_dropout_rate": 0.1,
        "self_attention_dropout_rate": 0.1,
        "src_attention_dropout_rate": 0.1,
    },
}

ATT_MODEL = {
    "model_conf": {"ctc_weight": 0.3, "lsm_weight": 0.1, "length_normalized_loss": False},
    "init": "xavier_uniform",
    "best_model_criterion": [["valid", "acc", "max"]],
    "keep_nbest_models": 2,
}


def _conformer_encoder(num_blocks: int) -> dict:
    """librispeech_100's conformer encoder (conv2d input, rel-pos attention, conv module), at d=16."""
    conf = {
        "output_size": 16,
        "attention_heads": 2,
        "linear_units": 64,
        "num_blocks": num_blocks,
        "dropout_rate": 0.1,
        "positional_dropout_rate": 0.1,
        "attention_dropout_rate": 0.1,
        "input_layer": "conv2d",
        "normalize_before": True,
        "macaron_style": True,
        "pos_enc_layer_type": "rel_pos",
        "selfattention_layer_type": "rel_selfattn",
        "activation_type": "swish",
        "use_cnn_module": True,
        "cnn_module_kernel": 15,
    }
    from espnet2.asr.encoder.conformer_encoder import ConformerEncoder

    # Recipes set rel_pos_type: latest once ESPnet had it (0.9.8+); a release without it used the legacy one.
    if "rel_pos_type" in inspect.signature(ConformerEncoder.__init__).parameters:
        conf["rel_pos_type"] = "latest"
    return conf


def _has_e_branchformer() -> bool:
    try:
        import espnet2.asr.encoder.e_branchformer_encoder  # noqa: F401
    except ImportError:
        return False
    return True


def _keeps_decoder_in_ctc_mode() -> bool:
    """Whether this release builds a decoder for a config without one and keeps it at ctc_weight 1.0."""
    from espnet2.asr.espnet_model import ESPnetASRModel
    from espnet2.tasks.asr import decoder_choices

    # 0.9.x: decoder defaults to rnn and is kept; 202204 still builds it but ESPnetASRModel drops it
    # (`self.decoder = None` in CTC mode); later releases default to no decoder.
    dropped = "self.decoder = None" in inspect.getsource(ESPnetASRModel.__init__)
    return decoder_choices.default is not None and not dropped


def family_config(family: str) -> dict:
    """The training config (conf/train_asr_<family>.yaml) of one family, for the installed release."""
    if family == "conformer":
        return {**COMMON, "encoder": "conformer", "encoder_conf": _conformer_encoder(2), **TRANSFORMER_DECODER,
                **ATT_MODEL}
    if family == "transformer":
        # an4's train_asr_transformer.yaml (conv2d input, pre-norm), at d=16.
        encoder_conf = {
            "output_size": 16,
            "attention_heads": 2,
            "linear_units": 64,
            "num_blocks": 2,
            "dropout_rate": 0.1,
            "positional_dropout_rate": 0.1,
            "attention_dropout_rate": 0.0,
            "input_layer": "conv2d",
            "normalize_before": True,
        }
        return {**COMMON, "encoder": "transformer", "encoder_conf": encoder_conf, **TRANSFORMER_DECODER,
                **ATT_MODEL}
    if family == "e_branchformer":
        # librispeech_100's train_asr_e_branchformer.yaml with plain conv2d input (the Hub's e_branchformers),
        # no layer drop (it would make a 2-block model skip blocks), at d=16.
        encoder_conf = {
            "output_size": 16,
            "attention_heads": 2,
            "attention_layer_type": "rel_selfattn",
            "pos_enc_layer_type": "rel_pos",
            "rel_pos_type": "latest",
            "cgmlp_linear_units": 64,
            "cgmlp_conv_kernel": 15,
            "use_linear_after_conv": False,
            "gate_activation": "identity",
            "num_blocks": 2,
            "dropout_rate": 0.1,
            "positional_dropout_rate": 0.1,
            "attention_dropout_rate": 0.1,
            "input_layer": "conv2d",
            "layer_drop_rate": 0.0,
            "linear_units": 64,
            "positionwise_layer_type": "linear",
            "macaron_ffn": True,
            "use_ffn": True,
            "merge_conv_kernel": 15,
        }
        return {**COMMON, "encoder": "e_branchformer", "encoder_conf": encoder_conf, **TRANSFORMER_DECODER,
                **ATT_MODEL, "init": None}
    if family == "rnn":
        # an4's train_asr_rnn.yaml (LSTM encoder and decoder, adadelta, reduce-on-plateau, keep 1 best, so
        # asr.sh packs the "<N>epoch.pth" the best symlink points to), with `init: chainer` as the RNN models on
        # the Hub trained by these releases have it (ESPnet 202611 refuses that choice). Encoder `rnn` (no conv
        # input layer: the one family without the encoder.embed.out rename).
        return {
            "frontend_conf": COMMON["frontend_conf"],
            "init": "chainer",
            "batch_type": "folded",
            "batch_size": 8,
            "optim": "adadelta",
            "optim_conf": {"lr": 1.0, "rho": 0.95, "eps": 1.0e-08, "weight_decay": 0},
            "patience": 4,
            "val_scheduler_criterion": ["valid", "loss"],
            "best_model_criterion": [["valid", "acc", "max"]],
            "keep_nbest_models": 1,
            "scheduler": "reducelronplateau",
            "scheduler_conf": {"mode": "min", "factor": 0.5, "patience": 1},
            "encoder": "rnn",
            "encoder_conf": {
                "rnn_type": "lstm",
                "bidirectional": True,
                "use_projection": True,
                "num_layers": 2,
                "hidden_size": 16,
                "output_size": 16,
                "dropout": 0.0,
            },
            "decoder": "rnn",
            # att_conf: the location attention's default width (320) would be most of the checkpoint
            "decoder_conf": {"rnn_type": "lstm", "num_layers": 1, "hidden_size": 16, "dropout": 0.0,
                             "att_conf": {"adim": 16}},
            "model_conf": {"ctc_weight": 0.5},
        }
    if family == "ctc":
        # librispeech_100's train_conformer_ctc.yaml: ctc_weight 1.0 and no decoder section. Whatever the
        # release then builds as decoder (0.9.x: its default RNN decoder, saved but never trained) stays.
        conf = {**COMMON, "encoder": "conformer", "encoder_conf": _conformer_encoder(2), "init": None,
                "model_conf": {"ctc_weight": 1.0, "lsm_weight": 0.1, "length_normalized_loss": False},
                "best_model_criterion": [["valid", "loss", "min"]], "keep_nbest_models": 2}
        if _keeps_decoder_in_ctc_mode():
            # This release builds its default decoder (rnn) even at ctc_weight 1.0 and saves it untrained (the
            # 14 decoder.* tensors of 0.9.x CTC checkpoints). Its default widths (320) alone would be 4 MB:
            # make it as tiny as the rest; the tensor names and count are what the fixture is for.
            conf["decoder_conf"] = {"hidden_size": 16, "att_conf": {"adim": 16}}
        return conf
    raise ValueError(f"unknown family {family!r}")


def checkpoint_link(config: dict) -> str:
    """The symlink asr.sh packs (inference_asr_model): <phase>.<criterion>.ave.pth."""
    phase, criterion, _ = config["best_model_criterion"][0]
    return f"{phase}.{criterion}.ave.pth"


# ------------------------------------------------------------------------------------------------- running


def release_name() -> str:
    import espnet

    return str(espnet.__version__)


def run(args: list, cwd: Path, log: Path) -> None:
    """`python -m <args>` with this venv's Python in `cwd`; on failure, the end of the log."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # the build machine is shared: one core per job
    env["PYTHONPATH"] = ""  # nothing from the caller's environment (e.g. a 3.11+ espzoo checkout)
    with log.open("a", encoding="utf-8") as out:
        out.write("$ python -m " + " ".join(str(a) for a in args) + "\n")
        out.flush()
        proc = subprocess.run([sys.executable, "-m"] + [str(a) for a in args], cwd=str(cwd), env=env,
                              stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = "".join(log.read_text(encoding="utf-8").splitlines(True)[-40:])
        raise RuntimeError(f"`{args[0]}` failed (exit {proc.returncode}); log {log}:\n{tail}")


def write_data_dir(split: str, n: int, dest: Path) -> None:
    """A Kaldi data dir as asr.sh's dump/raw has it: the first `n` clips, wav.scp with absolute paths."""
    src = SPEECH / split
    dest.mkdir(parents=True, exist_ok=True)
    keep = [line.split(maxsplit=1)[0] for line in (src / "text").read_text(encoding="utf-8").splitlines()][:n]
    chosen = set(keep)
    for name in ("text", "utt2spk", "wav.scp"):
        rows = []
        for line in (src / name).read_text(encoding="utf-8").splitlines():
            utt, rest = line.split(maxsplit=1)
            if utt not in chosen:
                continue
            if name == "wav.scp":
                rest = str((src / rest).resolve())
            rows.append(f"{utt} {rest}\n")
        (dest / name).write_text("".join(sorted(rows)), encoding="utf-8")


def known_train_options() -> set:
    """The options this release's asr_train accepts (newer switches such as --use_wandb are skipped if absent)."""
    from espnet2.tasks.asr import ASRTask

    return {opt for action in ASRTask.get_parser()._actions for opt in action.option_strings}


def train(family: str, work: Path) -> tuple:
    """Tokens, stats and training as asr.sh stages 5, 10 and 11 run them; returns (config, exp_dir)."""
    log = work / "build.log"
    write_data_dir("train", N_TRAIN, work / "dump/raw/train")
    write_data_dir("dev", N_VALID, work / "dump/raw/dev")
    token_dir = "data/token_list/char"
    (work / token_dir).mkdir(parents=True, exist_ok=True)
    run(["espnet2.bin.tokenize_text", "--token_type", "char", "--input", "dump/raw/train/text",
         "--output", f"{token_dir}/tokens.txt", "--field", "2-", "--cleaner", "none", "--g2p", "none",
         "--write_vocabulary", "true", "--add_symbol", "<blank>:0", "--add_symbol", "<unk>:1",
         "--add_symbol", "<sos/eos>:-1"], work, log)

    config = family_config(family)
    conf_name = f"train_asr_{family}"
    (work / "conf").mkdir(exist_ok=True)
    (work / f"conf/{conf_name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    stats_dir = "exp/asr_stats_raw_char"  # asr.sh's names with lang=noinfo, token_type=char, feats_type=raw
    exp_dir = f"exp/asr_{conf_name}_raw_char"  # asr.sh: asr_<config basename>_<feats_type>_<token_type>
    known = known_train_options()
    common = [
        "--use_preprocessor", "true", "--token_type", "char", "--token_list", f"{token_dir}/tokens.txt",
        "--non_linguistic_symbols", "none", "--cleaner", "none", "--g2p", "none",
        "--config", f"conf/{conf_name}.yaml", "--frontend_conf", "fs=16k",
        "--train_data_path_and_name_and_type", "dump/raw/train/wav.scp,speech,sound",
        "--train_data_path_and_name_and_type", "dump/raw/train/text,text,text",
        "--valid_data_path_and_name_and_type", "dump/raw/dev/wav.scp,speech,sound",
        "--valid_data_path_and_name_and_type", "dump/raw/dev/text,text,text",
        "--ngpu", "0", "--num_workers", "0", "--seed", "0",
    ]
    for switch in ("--use_tensorboard", "--use_matplotlib", "--use_wandb"):
        if switch in known:
            common += [switch, "false"]
    run(["espnet2.bin.asr_train", "--collect_stats", "true", *common, "--batch_type", "unsorted",
         "--batch_size", "8", "--train_shape_file", "dump/raw/train/wav.scp",
         "--valid_shape_file", "dump/raw/dev/wav.scp", "--output_dir", stats_dir], work, log)
    # asr.sh appends the vocabulary size to each text shape (the numel batcher needs both dims).
    vocab = len((work / token_dir / "tokens.txt").read_text(encoding="utf-8").splitlines())
    for split in ("train", "valid"):
        shapes = (work / stats_dir / split / "text_shape").read_text().splitlines()
        (work / stats_dir / split / "text_shape.char").write_text("".join(f"{s},{vocab}\n" for s in shapes))
    run(["espnet2.bin.asr_train", *common, "--normalize", "global_mvn",
         "--normalize_conf", f"stats_file={stats_dir}/train/feats_stats.npz",
         "--train_shape_file", f"{stats_dir}/train/speech_shape",
         "--train_shape_file", f"{stats_dir}/train/text_shape.char",
         "--valid_shape_file", f"{stats_dir}/valid/speech_shape",
         "--valid_shape_file", f"{stats_dir}/valid/text_shape.char",
         # asr.sh's fold lengths for raw speech and text (used by the folded batches of the RNN config)
         "--fold_length", "80000", "--fold_length", "150",
         "--max_epoch", str(MAX_EPOCH), "--num_att_plot", "0", "--resume", "true",
         "--output_dir", exp_dir], work, log)
    return config, exp_dir


# -------------------------------------------------------------------------------------------------- layout

README = """---
tags:
- espnet
- audio
- automatic-speech-recognition
language: en
datasets:
- espzoo_speech_en
license: cc-by-4.0
---

## ESPnet2 ASR model

### `{repo_id}`

A tiny {family} model trained by ESPnet {espnet} (Python {python}, torch {torch}) with its own
`espnet2.bin.asr_train` for {epochs} epochs on {n_train} of espzoo's synthesized English clips, char tokens,
packed by its `espnet2.bin.pack asr` and laid out as the Hub upload stage does. A test fixture of espzoo
(scripts/make_vintage_fixtures.py): what a checkpoint saved by this release looks like.

### Demo: How to use in ESPnet2

```bash
espzoo transcribe {repo_id} audio.wav
```

## ASR config

<details><summary>expand</summary>

```
{config}
```

</details>
"""


def lay_out(family: str, config: dict, exp_dir: str, work: Path, dest: Path, release: str) -> dict:
    """Pack as asr.sh's packing stage does, unpack as its Hub upload stage does, add the model card."""
    import torch

    log = work / "build.log"
    model_link = f"{exp_dir}/{checkpoint_link(config)}"
    if not (work / model_link).exists():
        raise RuntimeError(f"the trainer left no {model_link} in {work / exp_dir}")
    packed = f"{exp_dir}/packed.zip"
    run(["espnet2.bin.pack", "asr", "--asr_train_config", f"{exp_dir}/config.yaml",
         "--asr_model_file", model_link,
         "--option", "exp/asr_stats_raw_char/train/feats_stats.npz",
         # asr.sh does not pack tokens.txt (config.yaml holds the token list); Hub repos often carry it.
         "--option", "data/token_list/char/tokens.txt",
         "--outpath", packed], work, log)
    if dest.exists():
        shutil.rmtree(str(dest))
    dest.mkdir(parents=True)
    with zipfile.ZipFile(str(work / packed)) as archive:
        archive.extractall(str(dest))
    meta = yaml.safe_load((dest / "meta.yaml").read_text(encoding="utf-8"))
    model_file = dest / meta["files"]["asr_model_file"]
    # The packed file must be the very bytes the trainer wrote (pack resolves the .ave.pth symlink).
    trained = (work / model_link).resolve()
    if model_file.read_bytes() != trained.read_bytes():
        raise RuntimeError(f"{model_file} differs from the trainer's {trained}")
    config_text = (dest / meta["yaml_files"]["asr_train_config"]).read_text(encoding="utf-8")
    versions = {"espnet": release, "python": sys.version.split()[0], "torch": str(torch.__version__)}
    readme = README.format(repo_id=f"espzoo-test/vintage-{dest.name}", family=family, epochs=MAX_EPOCH,
                           n_train=N_TRAIN, config=config_text.rstrip(), **versions)
    (dest / "README.md").write_text(readme, encoding="utf-8")
    state = torch.load(str(model_file), map_location="cpu")
    return {
        "fixture": dest.name,
        "model_file": meta["files"]["asr_model_file"],
        "tensors": len(state),
        "values": sum(int(v.numel()) for v in state.values()),
        "size": sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()),
        "model_size": model_file.stat().st_size,
    }


def versions() -> dict:
    from importlib import metadata

    found = {"python": sys.version.split()[0]}
    for dist in ("espnet", "torch", "typeguard", "numpy", "PyYAML", "soundfile", "librosa"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "-"
    return found


def main(argv: list = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "tests/fixtures/vintage")
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated: " + ", ".join(FAMILIES))
    parser.add_argument("--keep-work", action="store_true",
                        help="keep each training folder (its build.log, every epoch) in the temp dir")
    args = parser.parse_args(argv)

    release = release_name()
    families = [f for f in args.families.split(",") if f]
    for family in families:
        if family not in FAMILIES:
            parser.error(f"unknown family {family!r}")
    if "e_branchformer" in families and not _has_e_branchformer():
        print(f"ESPnet {release} has no e_branchformer encoder: skipped")
        families.remove("e_branchformer")

    args.out.mkdir(parents=True, exist_ok=True)
    found = versions()
    command = " ".join([sys.executable, "scripts/make_vintage_fixtures.py", "--out", "tests/fixtures/vintage",
                        "--families", ",".join(families)])
    rows = []
    for family in families:
        began = time.time()
        # Train outside the repo, so nothing but the laid-out fixture can be committed by mistake.
        work = Path(tempfile.mkdtemp(prefix=f"vintage-{release}-{family}."))
        config, exp_dir = train(family, work)
        row = lay_out(family, config, exp_dir, work, args.out / f"{release}-{family}", release)
        row.update(release=release, family=family, seconds=round(time.time() - began, 1), command=command,
                   **found)
        rows.append(row)
        print(yaml.safe_dump(row, sort_keys=False))
        if args.keep_work:
            print(f"training folder kept: {work}")
        else:
            shutil.rmtree(str(work))
    record(args.out, release, rows)
    return 0


def record(out: Path, release: str, rows: list) -> None:
    """build-<release>.yaml (merged: building some families again replaces only their rows), the venv's
    `pip freeze` as freeze-<release>.txt, and VERSIONS.md regenerated from every build-*.yaml in `out`."""
    path = out / f"build-{release}.yaml"
    old = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else []
    built = {row["fixture"] for row in rows}
    merged = sorted([r for r in old if r["fixture"] not in built] + rows, key=lambda r: FAMILIES.index(r["family"]))
    path.write_text(yaml.safe_dump(merged, sort_keys=False), encoding="utf-8")
    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze"], stdout=subprocess.PIPE, check=True)
    (out / f"freeze-{release}.txt").write_bytes(freeze.stdout)
    write_versions(out)


def write_versions(out: Path) -> None:
    lines = [
        "# Vintage ESPnet checkpoints: who built them",
        "",
        "Written by scripts/make_vintage_fixtures.py (do not edit by hand; rebuild instead). Each fixture was",
        "trained, packed and saved by the ESPnet release in its name, in its own venv (`freeze-<release>.txt`",
        "is that venv's `pip freeze`). Sizes are bytes of the whole fixture folder; tensors and values count",
        "the checkpoint's state dict as that release saved it.",
        "",
        "| fixture | family | checkpoint | tensors | values | bytes | espnet | python | torch | typeguard | numpy "
        "| run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    commands = []
    total = 0
    for build in sorted(out.glob("build-*.yaml")):
        for r in yaml.safe_load(build.read_text(encoding="utf-8")):
            total += r["size"]
            if r["command"] not in commands:
                commands.append(r["command"])
            lines.append(
                f"| {r['fixture']} | {r['family']} | `{r['model_file'].rsplit('/', 1)[-1]}` | {r['tensors']} | "
                f"{r['values']} | {r['size']} | {r['espnet']} | {r['python']} | {r['torch']} | {r['typeguard']} | "
                f"{r['numpy']} | {commands.index(r['command']) + 1} |"
            )
    lines += ["", f"Total: {total} bytes.", "", "Runs (the `run` column), from the repo root:", ""]
    lines += [f"{i}. `{c}`" for i, c in enumerate(commands, 1)]
    lines += [
        "",
        "Old venvs (outside the repo): `python -m venv` from pyenv's Python, then `pip install --no-deps",
        "espnet==<release>` and `torch==<version>`, then the dependencies the release needs for ASR training",
        "(see the freeze files), with typeguard 2.13.3 (typeguard 4 breaks these releases' type checks).",
        "What `pip install --no-deps` leaves out and these releases still import for ASR training:",
        "",
        "- 202402 (Python 3.10): torch 2.1.2 from PyPI imports only with its nvidia-*-cu12 wheels installed",
        "  (download.pytorch.org's CPU wheels were out of reach); torchaudio 2.1.2, einops; inflect<6 (inflect 7",
        "  needs typeguard 4).",
        "- 202204 (Python 3.9): six, pytorch-wpe, and wandb (the trainer calls `wandb.run` after the last",
        "  epoch even with --use_wandb false; wandb 0.12.21 with sentry-sdk<2).",
        "- 0.9.7 (Python 3.8): wandb (imported by abs_task; 0.10.33 with sentry-sdk<2), tensorboard, tensorboardX;",
        "  matplotlib 3.3.4 and editdistance 0.5.3 rather than its pins 3.1.0 and 0.5.2 (picked for their",
        "  Python 3.8 wheels; the pins were not tried).",
        "",
    ]
    (out / "VERSIONS.md").write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
