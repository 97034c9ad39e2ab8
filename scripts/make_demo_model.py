"""Train the embedded default model (a tiny English char conformer) and lay it out as a hub repo.

    python scripts/make_demo_model.py     # -> zoo/assets/pretrained/espzoo-demo/tiny-en-char/ (~4 min on 2 CPU cores)

The model is trained by ESPnet itself on the committed English espeak-ng speech (train, valid on dev),
then decoded with ESPnet's Speech2Text on the test split; the CER/WER go into its README as on hub
model cards. The output is committed: `make demo` serves it from espzoo's mirror and fine-tunes it.
The training and layout code is shared with the test fixtures (espzoo._tiny).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from espzoo._tiny import SPEECH, Recipe, TrainedModel, train_tiny_asr, write_hub_repo

REPO_ROOT = Path(__file__).resolve().parent.parent

REPO_ID = "espzoo-demo/tiny-en-char"
DEST = REPO_ROOT / "zoo" / "assets" / "pretrained" / REPO_ID
DEMO_RECIPE = Recipe(
    token_type="char",
    exp_dir="exp/asr_train_asr_conformer_tiny_raw_en_char",
    stats_dir="exp/asr_stats_raw_en_char",
    token_dir="data/en_token_list/char",
    max_epoch=35,
    keep_nbest=5,
    config_overrides={"optim_conf": {"lr": 0.004}, "scheduler_conf": {"warmup_steps": 150}},
)


def error_rates(model: TrainedModel, split: str = "test") -> dict[str, float]:
    """CER and WER of ESPnet's Speech2Text (beam 4, CTC weight 0.3) on one committed split."""
    import editdistance
    import soundfile as sf

    from espzoo._espnet import import_asr_task

    import_asr_task()  # offline NLTK setup before espnet2.bin imports the ASR task
    from espnet2.bin.asr_inference import Speech2Text

    r = model.recipe
    here = os.getcwd()
    os.chdir(model.work)  # the config's relative paths are relative to the training cwd
    try:
        speech2text = Speech2Text(
            asr_train_config=f"{r.exp_dir}/config.yaml",
            asr_model_file=f"{r.exp_dir}/{r.checkpoint_name}",
            device="cpu",
            beam_size=4,
            ctc_weight=0.3,
            lm_weight=0.0,
            nbest=1,
        )
        data = SPEECH / r.lang / split
        refs = dict(line.split(" ", 1) for line in (data / "text").read_text(encoding="utf-8").splitlines())
        wavs = dict(line.split() for line in (data / "wav.scp").read_text().splitlines())
        char_err = char_len = word_err = word_len = 0
        for utt, ref in refs.items():
            audio, _ = sf.read(data / wavs[utt], dtype="float32")
            hyp = speech2text(audio)[0][0]
            char_err += editdistance.eval(list(ref), list(hyp))
            char_len += len(ref)
            word_err += editdistance.eval(ref.split(), hyp.split())
            word_len += len(ref.split())
    finally:
        os.chdir(here)
    return {"cer": 100 * char_err / char_len, "wer": 100 * word_err / word_len, "utterances": len(refs)}


def results_section(rates: dict[str, float], split: str = "test") -> str:
    """The RESULTS tables ESPnet model cards carry (the catalog and people read them)."""
    n = rates["utterances"]
    return f"""
## Results

### WER

|dataset|Snt|Err|
|---|---|---|
|decode_asr_asr_model_valid.acc.ave/{split}|{n}|{rates["wer"]:.1f}|

### CER

|dataset|Snt|Err|
|---|---|---|
|decode_asr_asr_model_valid.acc.ave/{split}|{n}|{rates["cer"]:.1f}|
"""


def main() -> None:
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="espzoo-demo-model-") as tmp:
        model = train_tiny_asr(DEMO_RECIPE, Path(tmp) / "work")
        rates = error_rates(model)
        DEST.parent.mkdir(parents=True, exist_ok=True)
        write_hub_repo(model, DEST, repo_id=REPO_ID, results=results_section(rates))
    size = sum(p.stat().st_size for p in DEST.rglob("*") if p.is_file())
    print(f"trained in {model.seconds:.0f} s; test CER {rates['cer']:.1f}% WER {rates['wer']:.1f}%", file=sys.stderr)
    print(f"wrote {DEST} ({size / 1e6:.2f} MB) in {time.perf_counter() - began:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
