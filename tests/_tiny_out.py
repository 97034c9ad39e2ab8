"""A minimal experiment dir OUT (the layout espzoo.train.driver.run writes), built by ESPnet itself.

The model is a real ESPnet ASR model (conformer encoder 2 blocks d=64, transformer decoder 1 block, char
tokens, CTC weight 0.3) with seeded random weights: its transcripts are nonsense but deterministic, which is
what the evaluate/export tests need (same transcripts before and after export, a decode that runs).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from _paths import SPEECH_ROOT

ASSETS = SPEECH_ROOT
TOKENS = ["<blank>", "<unk>", "<space>", *"abcdefghijklmnopqrstuvwxyz'", "<sos/eos>"]


def build_tiny_out(dest: Path, *, token_type: str = "char", seed: int = 0) -> Path:
    """Write OUT/{config.yaml, model.pth, tokens.txt, feats_stats.npz, provenance.json} (and bpe.model for
    token_type "bpe", a sentencepiece unigram model of the English train transcripts) and return OUT."""
    import torch

    from espzoo.models.espnet_env import import_asr_task

    asr_task = import_asr_task()
    dest.mkdir(parents=True, exist_ok=True)
    tokens = TOKENS if token_type == "char" else _train_sentencepiece(dest)
    (dest / "tokens.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    _write_stats(dest / "feats_stats.npz", dims=80, seed=seed)

    argv = ["--token_list", str(dest / "tokens.txt"), "--output_dir", str(dest / "espnet"), "--token_type", token_type]
    if token_type == "bpe":
        argv += ["--bpemodel", str(dest / "bpe.model")]
    args = asr_task.get_parser().parse_args(argv)
    args.normalize = "global_mvn"
    args.normalize_conf = {"stats_file": str(dest / "feats_stats.npz")}
    args.encoder = "conformer"
    args.encoder_conf = {
        "output_size": 64, "attention_heads": 2, "linear_units": 128, "num_blocks": 2,
        "input_layer": "conv2d", "cnn_module_kernel": 7, "pos_enc_layer_type": "rel_pos",
        "selfattention_layer_type": "rel_selfattn", "rel_pos_type": "latest",
    }
    args.decoder = "transformer"
    args.decoder_conf = {"attention_heads": 2, "linear_units": 128, "num_blocks": 1}
    args.model_conf = {"ctc_weight": 0.3, "lsm_weight": 0.1}
    torch.manual_seed(seed)
    model = asr_task.build_model(args)  # also turns token_list into the inline list ESPnet saves
    torch.save(model.state_dict(), dest / "model.pth")

    config = vars(args)
    # OUT's config holds paths relative to OUT (espzoo.train), like a hub repo's are relative to its root.
    config["normalize_conf"] = {"stats_file": "feats_stats.npz"}
    config["output_dir"] = "espnet"
    if token_type == "bpe":
        config["bpemodel"] = "bpe.model"
    (dest / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    provenance = {"source": {"repo_id": "espzoo-test/tiny_char", "commit": "0" * 40}, "language": "en"}
    (dest / "provenance.json").write_text(json.dumps(provenance, indent=2), encoding="utf-8")
    return dest


def _train_sentencepiece(dest: Path) -> list[str]:
    """bpe.model trained on the committed English transcripts; the token list in ESPnet's order."""
    import sentencepiece

    text = ASSETS / "en" / "train" / "text"
    lines = [line.split(maxsplit=1)[1] for line in text.read_text(encoding="utf-8").splitlines() if line]
    (dest / "bpe_train.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    sentencepiece.SentencePieceTrainer.train(
        input=str(dest / "bpe_train.txt"), model_prefix=str(dest / "bpe"), vocab_size=40, model_type="unigram",
        character_coverage=1.0, minloglevel=2,
    )
    (dest / "bpe_train.txt").unlink()
    (dest / "bpe.vocab").unlink()
    processor = sentencepiece.SentencePieceProcessor(model_file=str(dest / "bpe.model"))
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    return ["<blank>", "<unk>", *[p for p in pieces if p not in ("<unk>", "<s>", "</s>")], "<sos/eos>"]


def _write_stats(path: Path, *, dims: int, seed: int) -> None:
    """feats_stats.npz as ESPnet's collect_stats writes it (count, sum, sum_square), for log-mel-like features."""
    rng = np.random.default_rng(seed)
    count = 1000
    mean = rng.normal(-4.0, 1.0, dims)
    var = rng.uniform(1.0, 4.0, dims)
    np.savez(path, count=np.array(count), sum=mean * count, sum_square=(var + mean**2) * count)


def small_data_dir(dest: Path, *, lang: str = "en", split: str = "test", count: int = 2) -> Path:
    """A Kaldi dir with the `count` shortest committed utterances of zoo/assets/speech/<lang>/<split>."""
    import soundfile

    source = ASSETS / lang / split
    recordings = dict(line.split(maxsplit=1) for line in (source / "wav.scp").read_text().splitlines() if line)
    texts = dict(line.split(maxsplit=1) for line in (source / "text").read_text(encoding="utf-8").splitlines() if line)
    # the shortest (decoding is the slow part of these tests), in id order as Kaldi dirs are sorted
    shortest = sorted(sorted(recordings, key=lambda utt: soundfile.info(str(source / recordings[utt])).frames)[:count])
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "wav.scp").write_text("".join(f"{u} {(source / recordings[u]).resolve()}\n" for u in shortest))
    (dest / "text").write_text("".join(f"{u} {texts[u]}\n" for u in shortest), encoding="utf-8")
    return dest


def audio_files(data_dir: Path) -> list[Path]:
    """The audio files of a Kaldi dir made by `small_data_dir`, in its (id) order."""
    return [Path(line.split(maxsplit=1)[1]) for line in (data_dir / "wav.scp").read_text().splitlines() if line]
