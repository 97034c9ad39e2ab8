"""espzoo plan + apply against ESPnet's own path, on a >= 1 GB checkpoint and the same new vocabulary.

    python bench/transfer.py            # builds bench/.work/big/ (once), runs both, deletes the big files
    python bench/transfer.py --keep     # keep bench/.work/ for another run

The pretrained model is an ESPnet conformer at large size (d=1024, 12 blocks, FFN 4096; transformer decoder)
with a 5000-token vocabulary, random weights, built by ESPnet and saved with torch.save. The new vocabulary is
a 4000-token list sharing half its tokens with the old one.

- espzoo:  `plan_transfer` (source mmapped, target shapes from the meta device) + `apply_plan` (writes the
           adapted checkpoint for the new model, shared-token rows transplanted).
- ESPnet:  build the new model (ASRTask.build_model), then `load_pretrained_model(ckpt, model,
           ignore_init_mismatch=True)`, as `asr_train.py --init_param ckpt --ignore_init_mismatch true` does.

Each runs in its own fresh process (both import ESPnet); the wall time and the peak RSS (os.wait4's rusage of
that child) are printed, then the ratios espzoo/ESPnet LAST. Goals: RSS <= 0.6x, time <= 1x; espzoo's peak RSS
<= 1.5x the checkpoint's size.

    python bench/transfer.py --case s2t [--size medium|small]

The S2T case: an OWSM-v3.1-shaped model built by ESPnet's S2T task (e_branchformer encoder, transformer
decoder; `medium` is v3.1 medium's shape, d=1024, 18+18 blocks, 1.02B parameters, a 50k-token OWSM token list;
`small` a quick d=256 stand-in), random weights. The transfer adds a language token the model lacks (`<top>`):
espzoo plans and applies it (token appended to the token list and to bpe.model, every pretrained row kept, the
new row from `<spa>`'s); ESPnet builds the new model (S2TTask.build_model) and loads with
`load_pretrained_model(..., ignore_init_mismatch=True)`, which leaves every vocabulary-sized tensor fresh.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

WORK = Path(__file__).resolve().parent / ".work"
BIG = WORK / "big"
OLD_VOCAB, NEW_VOCAB, SHARED = 5000, 4000, 2000

LARGE_CONFORMER = {
    "frontend": "default",
    "frontend_conf": {"n_fft": 512, "win_length": 400, "hop_length": 160},
    "normalize": "global_mvn",
    "encoder": "conformer",
    "encoder_conf": {
        "output_size": 1024, "attention_heads": 16, "linear_units": 4096, "num_blocks": 12,
        "input_layer": "conv2d", "normalize_before": True, "macaron_style": True, "rel_pos_type": "latest",
        "pos_enc_layer_type": "rel_pos", "selfattention_layer_type": "rel_selfattn", "activation_type": "swish",
        "use_cnn_module": True, "cnn_module_kernel": 31,
    },
    "decoder": "transformer",
    "decoder_conf": {"attention_heads": 16, "linear_units": 2048, "num_blocks": 3},
    "model_conf": {"ctc_weight": 0.3, "lsm_weight": 0.1},
    "token_type": "word",
}


S2T_SIZES = {
    # OWSM v3.1 medium (egs2/owsm_v3.1/s2t1/conf/train_s2t_ebf_conv2d_size1024_e18_d18_*.yaml): 1.02B parameters
    "medium": {"d": 1024, "heads": 16, "units": 4096, "enc": 18, "dec": 18, "tokens": 50000},
    "small": {"d": 256, "heads": 4, "units": 1024, "enc": 6, "dec": 6, "tokens": 6500},
}
OWSM_LANGUAGES = ("eng", "fra", "spa", "deu", "por", "ita", "jpn", "zho", "rus", "ara")


def s2t_config(size: str) -> dict:
    """An OWSM v3.1-shaped S2T config (espnet egs2/owsm_v3.1 e_branchformer), scaled by `size`."""
    z = S2T_SIZES[size]
    return {
        "frontend": "default",
        "frontend_conf": {"n_fft": 512, "win_length": 400, "hop_length": 160, "fs": "16k"},
        "normalize": "global_mvn",
        "encoder": "e_branchformer",
        "encoder_conf": {
            # v3.1's own attention (selfattn + abs_pos; it trains with flash attention, which changes no tensor)
            "output_size": z["d"], "attention_heads": z["heads"], "attention_layer_type": "selfattn",
            "pos_enc_layer_type": "abs_pos", "rel_pos_type": "latest", "cgmlp_linear_units": z["units"],
            "cgmlp_conv_kernel": 31, "use_linear_after_conv": False, "gate_activation": "identity",
            "num_blocks": z["enc"], "input_layer": "conv2d", "layer_drop_rate": 0.0, "linear_units": z["units"],
            "positionwise_layer_type": "linear", "use_ffn": True, "macaron_ffn": True, "merge_conv_kernel": 31,
        },
        "decoder": "transformer",
        "decoder_conf": {"attention_heads": z["heads"], "linear_units": z["units"], "num_blocks": z["dec"]},
        "model_conf": {"ctc_weight": 0.3, "lsm_weight": 0.1, "sym_na": "<na>"},
        "preprocessor": "s2t",
        "preprocessor_conf": {"speech_length": 30, "first_time_symbol": "<0.00>", "last_time_symbol": "<30.00>",
                              "notime_symbol": "<notimestamps>", "na_symbol": "<na>", "fs": 16000},
        "token_type": "bpe",
    }


def s2t_specials() -> list[str]:
    times = [f"<{i * 0.02:.2f}>" for i in range(1501)]
    return ["<na>", "<nospeech>", *(f"<{c}>" for c in OWSM_LANGUAGES), "<asr>", "<st_eng>", "<notimestamps>", *times]


def s2t_tokens(size: str) -> list[str]:
    """The OWSM token list layout (s2t.sh): <blank>, <unk>, specials, pieces, <sos>, <eos>, <sop>."""
    pieces = [f"p{i}" for i in range(S2T_SIZES[size]["tokens"] - 5 - len(s2t_specials()))]
    return ["<blank>", "<unk>", *s2t_specials(), *pieces, "<sos>", "<eos>", "<sop>"]


def build_s2t(size: str) -> None:
    """Child: the OWSM-shaped model built by ESPnet's S2T task, saved as an experiment dir with a bpe.model
    holding the special symbols (its ordinary pieces do not matter to a transfer)."""
    import numpy as np
    import sentencepiece as spm
    import torch
    import yaml

    from espzoo.models.build import build_model

    BIG.mkdir(parents=True, exist_ok=True)
    np.savez(BIG / "feats_stats.npz", count=np.array(1000), sum=np.zeros(80), sum_square=np.ones(80) * 1000)
    (WORK / "text.txt").write_text("hola que tal\nthe cat sat on the mat\n" * 50)
    spm.SentencePieceTrainer.train(
        input=str(WORK / "text.txt"), model_prefix=str(BIG / "bpe"), vocab_size=3 + len(s2t_specials()) + 20,
        model_type="unigram", user_defined_symbols=",".join(s2t_specials()), hard_vocab_limit=False, minloglevel=2,
    )
    config = dict(s2t_config(size), token_list=s2t_tokens(size), bpemodel="bpe.model",
                  normalize_conf={"stats_file": "feats_stats.npz"})
    torch.manual_seed(0)
    model = build_model({**config, "normalize_conf": {"stats_file": str(BIG / "feats_stats.npz")}})
    print(f"built {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters", file=sys.stderr)
    torch.save(model.state_dict(), BIG / "model.pth.tmp")
    os.replace(BIG / "model.pth.tmp", BIG / "model.pth")
    (BIG / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def run_espzoo_s2t() -> None:
    from espzoo.transfer.apply import apply_plan
    from espzoo.transfer.plan import TransferOptions, plan_transfer

    plan = plan_transfer(str(BIG), TransferOptions(lang="top", lang_init="spa"), workdir=WORK / "vocab")
    apply_plan(plan, WORK / "espzoo_out")
    print("espzoo:", plan.summary()["language"]["describe"], file=sys.stderr)


def run_espnet_s2t() -> None:
    import yaml
    from espnet2.torch_utils.load_pretrained_model import load_pretrained_model

    from espzoo.models.build import build_model

    config = yaml.safe_load((BIG / "config.yaml").read_text())
    config["token_list"] = [*config["token_list"], "<top>"]  # the new language token, appended
    config["normalize_conf"] = {"stats_file": str(BIG / "feats_stats.npz")}
    config["bpemodel"] = str(BIG / "bpe.model")
    model = build_model(config)  # S2TTask.build_model, as s2t_train.py does
    load_pretrained_model(str(BIG / "model.pth"), model, ignore_init_mismatch=True, map_location="cpu")
    print("espnet: loaded into", sum(1 for _ in model.state_dict()), "tensors", file=sys.stderr)


def old_tokens() -> list[str]:
    return ["<blank>", "<unk>", *(f"w{i}" for i in range(OLD_VOCAB - 3)), "<sos/eos>"]


def new_tokens() -> list[str]:
    shared = [f"w{i}" for i in range(0, 2 * SHARED, 2)]  # every other old token
    fresh = [f"n{i}" for i in range(NEW_VOCAB - 3 - SHARED)]
    return ["<blank>", "<unk>", *shared, *fresh, "<sos/eos>"]


def build() -> None:
    """Child: build the large model with ESPnet and save it as an experiment dir."""
    import numpy as np
    import torch
    import yaml

    from espzoo.models.build import build_model

    BIG.mkdir(parents=True, exist_ok=True)
    count, dims = 1000, 80
    np.savez(BIG / "feats_stats.npz", count=np.array(count), sum=np.zeros(dims), sum_square=np.ones(dims) * count)
    config = dict(LARGE_CONFORMER, token_list=old_tokens(), normalize_conf={"stats_file": "feats_stats.npz"})
    torch.manual_seed(0)
    model = build_model({**config, "normalize_conf": {"stats_file": str(BIG / "feats_stats.npz")}})
    torch.save(model.state_dict(), BIG / "model.pth.tmp")
    os.replace(BIG / "model.pth.tmp", BIG / "model.pth")
    (BIG / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (WORK / "new_tokens.txt").write_text("\n".join(new_tokens()) + "\n")


def run_espzoo() -> None:
    from espzoo.transfer.apply import apply_plan
    from espzoo.transfer.plan import TransferOptions, plan_transfer

    plan = plan_transfer(str(BIG), TransferOptions(vocab=str(WORK / "new_tokens.txt")))
    apply_plan(plan, WORK / "espzoo_out")
    actions = plan.summary()["actions"]
    print("espzoo:", {a: v["tensors"] for a, v in actions.items()}, file=sys.stderr)


def run_espnet() -> None:
    import yaml
    from espnet2.torch_utils.load_pretrained_model import load_pretrained_model

    from espzoo.models.build import build_model

    config = yaml.safe_load((BIG / "config.yaml").read_text())
    config["token_list"] = str(WORK / "new_tokens.txt")  # ESPnet reads a token list file itself
    config["normalize_conf"] = {"stats_file": str(BIG / "feats_stats.npz")}
    model = build_model(config)  # ASRTask.build_model, as asr_train.py does
    load_pretrained_model(str(BIG / "model.pth"), model, ignore_init_mismatch=True, map_location="cpu")
    print("espnet: loaded into", sum(1 for _ in model.state_dict()), "tensors", file=sys.stderr)


def measure(role: str, extra: tuple[str, ...] = ()) -> tuple[float, float]:
    """(wall seconds, peak RSS in GiB) of a fresh child process running `role`."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, __file__, "--child", role, *extra], env=_env())
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the {role} child failed")
    return seconds, usage.ru_maxrss / (1 << 20)  # ru_maxrss is in KiB on Linux


def _env() -> dict[str, str]:
    from espzoo.models.espnet_env import espnet_env

    return espnet_env()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=["build", "espzoo", "espnet"])
    parser.add_argument("--keep", action="store_true", help="Keep bench/.work/ (the big checkpoint) afterwards.")
    parser.add_argument("--case", choices=["asr", "s2t"], default="asr", help="asr: new vocabulary; s2t: new language")
    parser.add_argument("--size", choices=list(S2T_SIZES), default="medium", help="The S2T model's size.")
    args = parser.parse_args()
    global BIG
    if args.case == "s2t":
        BIG = WORK / f"owsm_{args.size}"
    extra = ("--case", args.case, "--size", args.size)
    if args.child:
        if args.case == "s2t":
            {"build": lambda: build_s2t(args.size), "espzoo": run_espzoo_s2t, "espnet": run_espnet_s2t}[args.child]()
        else:
            {"build": build, "espzoo": run_espzoo, "espnet": run_espnet}[args.child]()
        return 0
    try:
        if not (BIG / "model.pth").is_file():
            seconds, rss = measure("build", extra)
            print(f"built the checkpoint in {seconds:.0f} s (peak {rss:.1f} GiB)")
        size = (BIG / "model.pth").stat().st_size
        if args.case == "s2t":
            print(f"checkpoint: {size / (1 << 30):.2f} GiB, OWSM {args.size}, + new language token <top>")
        else:
            print(f"checkpoint: {size / (1 << 30):.2f} GiB, {OLD_VOCAB} -> {NEW_VOCAB} tokens ({SHARED} shared)")
        subprocess.run(["cat", str(BIG / "model.pth")], stdout=subprocess.DEVNULL, check=True)  # same warm cache
        results = {}
        for role in ("espnet", "espzoo"):
            results[role] = measure(role, extra)
            print(f"{role:>7}: {results[role][0]:6.1f} s   peak RSS {results[role][1]:5.2f} GiB")
        (t_zoo, m_zoo), (t_esp, m_esp) = results["espzoo"], results["espnet"]
        gib = size / (1 << 30)
        print(f"peak RSS / checkpoint size: espzoo {m_zoo / gib:.2f}x (goal <= 1.5), ESPnet {m_esp / gib:.2f}x")
        print(f"ratio espzoo/ESPnet: time {t_zoo / t_esp:.2f}x (goal <= 1), "
              f"peak RSS {m_zoo / m_esp:.2f}x (goal <= 0.6)")
    finally:
        if not args.keep:
            shutil.rmtree(WORK, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
