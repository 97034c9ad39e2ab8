"""The fine-tuning recipe's parts (issue 26), each checked where it shows: speed perturbation in the prepared data,
SpecAug and noise in ESPnet's config.yaml of the run, the frozen warm-up in which parameters ESPnet changed, the
layer-wise learning rates in ESPnet's optimizer parameter groups; `--augment none` changes nothing; bad values are
one sentence. The training runs are real (`espzoo finetune` on the tiny char model, ESPnet's trainer)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import soundfile
import yaml
from _hubtools import ESPZOO, SPEECH, subset
from _paths import REPO_ROOT

from espzoo.data.augment import speed_perturb
from espzoo.data.convert import prepare
from espzoo.errors import AugmentError, ScheduleError
from espzoo.train.augment import AugmentOptions, augment_config, parse_augment, specaug_conf
from espzoo.train.schedule import ScheduleOptions, check_schedule, lr_scales

# The shipped demo model (saved by ESPnet 202511): both ESPnet generations load it, so these runs are the same test
# on both stacks (on 202611 its subsampling tensors load under new names, and are saved under the old ones again).
DEMO = REPO_ROOT / "zoo" / "assets" / "pretrained" / "espzoo-demo" / "tiny-en-char"

# --- the parts as data ---------------------------------------------------------------------------------------------


def test_augment_specs_parse_and_bad_ones_are_one_sentence() -> None:
    assert parse_augment("none") == AugmentOptions() and parse_augment(None).off
    assert parse_augment("speed") == AugmentOptions(speed=(0.9, 1.0, 1.1))
    assert parse_augment("all") == AugmentOptions(speed=(0.9, 1.0, 1.1), specaug=True)
    assert parse_augment("speed=1.0/0.95/1.05,noise:/x") == AugmentOptions(speed=(0.95, 1.0, 1.05), noise="/x")
    for bad, words in (("sped", "'sped' is not an augmentation"), ("speed=fast", "numbers separated by '/'"),
                       ("speed=0.1/1.0", "within 0.5..2.0"), ("none,specaug", "cannot be combined"),
                       ("noise:", "is not an augmentation")):
        with pytest.raises(AugmentError, match=words):
            parse_augment(bad)


def test_schedule_checks() -> None:
    check_schedule(ScheduleOptions(), 1)
    check_schedule(ScheduleOptions(warmup_frozen=2, lr_decay=0.9), 3)
    for options, max_epoch, words in ((ScheduleOptions(warmup_frozen=-1), 5, "negative"),
                                      (ScheduleOptions(warmup_frozen=5), 5, "leaves no epoch"),
                                      (ScheduleOptions(lr_decay=1.5), 5, r"outside \(0, 1\]"),
                                      (ScheduleOptions(lr_decay=0.0), 5, r"outside \(0, 1\]")):
        with pytest.raises(ScheduleError, match=words):
            check_schedule(options, max_epoch)
    with pytest.raises(ScheduleError, match="--lora"):
        check_schedule(ScheduleOptions(lr_decay=0.9), 5, lora=True)


def test_lr_scales_decay_from_the_top_encoder_block_down() -> None:
    names = ["frontend.upstream.w", "encoder.embed.conv.0.weight", "encoder.encoders.0.ff.w", "encoder.encoders.1.ff.w",
             "encoder.encoders.2.ff.w", "encoder.after_norm.weight", "decoder.embed.0.weight", "ctc.ctc_lo.weight"]
    scales = lr_scales(names, 0.5)
    assert scales == {"frontend.upstream.w": 0.0625, "encoder.embed.conv.0.weight": 0.0625,
                      "encoder.encoders.0.ff.w": 0.125, "encoder.encoders.1.ff.w": 0.25, "encoder.encoders.2.ff.w": 0.5}
    assert lr_scales(names, 1.0) == {}
    with pytest.raises(ScheduleError, match="numbered blocks"):
        lr_scales(["encoder.rnn.0.weight", "ctc.ctc_lo.weight"], 0.9)


def test_specaug_is_sized_to_the_front_end_and_a_pretrained_one_is_kept() -> None:
    assert specaug_conf({"frontend": "default", "frontend_conf": {"n_mels": 40}})["freq_mask_width_range"] == [0, 5]
    assert specaug_conf({"frontend": "default"})["freq_mask_width_range"] == [0, 10]  # ESPnet's default 80 bins
    assert specaug_conf({"frontend": "s3prl"}) is None
    base = {"frontend": "default", "specaug": None, "specaug_conf": {}}
    assert augment_config(base, AugmentOptions()) == (base, [])  # nothing asked: the same object, untouched
    config, notes = augment_config(base, AugmentOptions(specaug=True))
    assert config["specaug"] == "specaug" and config["specaug_conf"]["num_freq_mask"] == 2 and base["specaug"] is None
    kept, notes = augment_config({**base, "specaug": "specaug", "specaug_conf": {"num_freq_mask": 4}},
                                 AugmentOptions(specaug=True))
    assert kept["specaug_conf"] == {"num_freq_mask": 4} and "kept" in notes[0]
    off, notes = augment_config({"frontend": "s3prl"}, AugmentOptions(specaug=True))
    assert "specaug" not in off and "left off" in notes[0]


def test_speed_perturbation_as_asr_sh_does_it(tmp_path: Path) -> None:
    source = subset(SPEECH / "train", tmp_path / "src", 3)
    dataset = prepare(source, tmp_path / "data" / "train", sample_rate=16000)
    done = speed_perturb(dataset, (0.9, 1.0, 1.1), tmp_path / "data" / "train_sp", tmp_path / "data" / "audio")

    def table(name: str) -> dict[str, str]:
        return dict(line.split(maxsplit=1) for line in (done.dir / name).read_text(encoding="utf-8").splitlines())

    wav, text, spk, shape = table("wav.scp"), table("text"), table("utt2spk"), table("speech_shape")
    originals = table("text").keys() - {u for u in text if u.startswith("sp")}
    assert len(originals) == 3 and done.num_utterances == 9 == len(wav) == len(spk) == len(shape)
    assert list(wav) == sorted(wav)  # Kaldi order
    for utt in originals:
        for factor in (0.9, 1.1):
            copy = f"sp{factor:g}-{utt}"
            assert text[copy] == text[utt]
            assert spk[copy] == f"sp{factor:g}-{spk[utt]}" and spk[copy] != spk[utt]  # speakers kept apart
            frames = soundfile.info(wav[copy]).frames
            assert int(shape[copy]) == frames and soundfile.info(wav[copy]).samplerate == 16000
            assert abs(frames - int(shape[utt]) / factor) <= 2  # lasts 1/factor as long: sox's `speed`
        assert wav[utt] == table("wav.scp")[utt]
    assert abs(done.total_seconds - dataset.total_seconds * (1 + 1 / 0.9 + 1 / 1.1)) < 0.01
    again = speed_perturb(dataset, (0.9, 1.0, 1.1), tmp_path / "data" / "train_sp", tmp_path / "data" / "audio")
    assert again.num_utterances == 9 and len(list((tmp_path / "data" / "audio").rglob("*.flac"))) == 6  # cached


# --- the command ---------------------------------------------------------------------------------------------------


def espzoo(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([ESPZOO, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("es")
    noise = root / "noise"
    noise.mkdir()
    import numpy as np

    soundfile.write(noise / "hum.wav", 0.05 * np.random.default_rng(0).standard_normal(8000 * 3), 8000)
    return {"train": subset(SPEECH / "train", root / "train", 12), "dev": subset(SPEECH / "dev", root / "dev", 4),
            "noise": noise}


def _base(model: Path, data: dict[str, Path], out: Path) -> list[str]:
    return ["finetune", str(model), "--train", str(data["train"]), "--valid", str(data["dev"]), "--out", str(out),
            "--vocab", "bpe:45", "--exclude", "decoder", "--batch-bins", "200000", "--json"]


@pytest.mark.parametrize("extra, words", [
    (["--lr-decay", "1.5"], "--lr-decay 1.5 is outside (0, 1]"),
    (["--warmup-frozen", "-1"], "--warmup-frozen -1 is negative"),
    (["--warmup-frozen", "3", "--max-epoch", "3"], "leaves no epoch of --max-epoch 3"),
    (["--augment", "noise:/missing"], "--augment noise:/missing: there is no such folder"),
    (["--augment", "speed,loud"], "'loud' is not an augmentation"),
])
def test_bad_recipe_options_are_one_sentence_before_any_work(
    data: dict[str, Path], tmp_path: Path, extra: list[str], words: str
) -> None:
    out = tmp_path / "exp"
    done = espzoo(*_base(DEMO, data, out), *extra, timeout=300)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert len(errors) == 1 and words in errors[0], done.stderr
    assert not out.exists()


@pytest.fixture(scope="module")
def everything(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One real run with every part on: 1 frozen warm-up epoch, then 1 more epoch of all of it."""
    out = tmp_path_factory.mktemp("all") / "exp"
    done = espzoo(*_base(DEMO, data, out), "--max-epoch", "2", "--warmup-frozen", "1", "--lr-decay", "0.9",
                  "--augment", f"speed,specaug,noise:{data['noise']}")
    assert done.returncode == 0, done.stderr[-3000:]
    return {"out": out, "summary": json.loads(done.stdout)}


def test_speed_perturbed_data_is_what_espnet_trained_on(everything: dict) -> None:
    out = everything["out"]
    utts = (out / "data" / "train_sp" / "text").read_text(encoding="utf-8").splitlines()
    assert len(utts) == 36 and sum(u.startswith(("sp0.9-", "sp1.1-")) for u in utts) == 24
    for run in (out, out / "warmup"):
        config = yaml.safe_load((run / "espnet" / "config.yaml").read_text(encoding="utf-8"))
        entry = [str(out.resolve() / "data" / "train_sp" / "wav.scp"), "speech", "sound"]
        assert entry in config["train_data_path_and_name_and_type"]


def test_specaug_and_noise_are_in_espnets_config_of_the_run(everything: dict) -> None:
    config = yaml.safe_load((everything["out"] / "espnet" / "config.yaml").read_text(encoding="utf-8"))
    assert config["specaug"] == "specaug"
    assert config["specaug_conf"]["freq_mask_width_range"] == [0, 10] and config["specaug_conf"]["num_time_mask"] == 2
    scp = Path(config["noise_scp"])
    assert config["noise_apply_prob"] == 0.5 and config["noise_db_range"] == "10_20"
    (key, path), = (line.split() for line in scp.read_text().splitlines())
    assert soundfile.info(path).samplerate == 16000  # ESPnet's preprocessor mixes it in without resampling
    log = (everything["out"] / "train.log").read_text(encoding="utf-8")
    assert "SpecAug(" in log  # ESPnet built the model with it


def test_the_warmup_trains_only_new_layers_then_everything(everything: dict) -> None:
    import torch

    out = everything["out"]
    warm = yaml.safe_load((out / "warmup" / "espnet" / "config.yaml").read_text(encoding="utf-8"))
    assert warm["freeze_param"] == ["encoder"] and warm["max_epoch"] == 1  # what loads as it is: the encoder
    main = yaml.safe_load((out / "espnet" / "config.yaml").read_text(encoding="utf-8"))
    assert main["freeze_param"] == [] and main["max_epoch"] == 1
    assert main["init_param"] == [str((out / "warmup" / "espnet" / "1epoch.pth").resolve())]
    init = torch.load(out / "init" / "init.pth", map_location="cpu", weights_only=True)
    after_warmup = torch.load(out / "warmup" / "espnet" / "1epoch.pth", map_location="cpu", weights_only=True)
    after = torch.load(out / "espnet" / "1epoch.pth", map_location="cpu", weights_only=True)
    weights = [k for k in init if k.endswith((".weight", ".bias"))]
    changed = {k for k in weights if not torch.equal(init[k], after_warmup[k])}
    assert changed and all(not k.startswith("encoder.") for k in changed)  # the body stayed as it was
    assert any(k.startswith("ctc.") for k in changed) and any(k.startswith("decoder.") for k in changed)
    assert all(not torch.equal(after_warmup[k], after[k]) for k in weights if k.startswith("encoder.encoders."))
    summary = everything["summary"]
    assert summary["epochs"] == 2 and "1 warm-up epoch(s)" in summary["recipe"]["schedule"]


def test_lr_decay_is_in_espnets_optimizer_parameter_groups(everything: dict) -> None:
    import torch

    out = everything["out"]
    config = yaml.safe_load((out / "espnet" / "config.yaml").read_text(encoding="utf-8"))
    assert config["exclude_weight_decay"] is True
    state = torch.load(out / "espnet" / "checkpoint.pth", map_location="cpu", weights_only=False)
    groups = state["optimizers"][0]["param_groups"]
    lr = config["optim_conf"]["lr"]
    rates = sorted({round(g["initial_lr"] / lr, 6) for g in groups})
    # 2 encoder blocks: block 1 at 0.9, block 0 at 0.81, the input layer at 0.729; the rest (and the embedding
    # ESPnet's own hook sets apart) at lr
    assert rates == [0.729, 0.81, 0.9, 1.0], rates
    scales = json.loads((out / "init" / "lr_groups.json").read_text())["scales"]
    sizes = {round(s, 6): sum(1 for v in scales.values() if round(v, 6) == round(s, 6)) for s in scales.values()}
    assert {round(g["initial_lr"] / lr, 6): len(g["params"]) for g in groups if g["initial_lr"] != lr} == sizes


def test_the_plan_provenance_and_message_say_what_was_on(everything: dict) -> None:
    out = everything["out"]
    for recipe in (json.loads((out / "plan.json").read_text())["recipe"],
                   json.loads((out / "provenance.json").read_text())["recipe"], everything["summary"]["recipe"]):
        assert recipe["augment"].startswith("speed 0.9/1.0/1.1, specaug, noise from ")
        assert recipe["schedule"] == "1 warm-up epoch(s) with the transferred body frozen, layer-wise lr decay 0.9"
        assert recipe["speed_perturb"] == {"factors": [0.9, 1.0, 1.1], "utterances": [12, 36]}
        assert recipe["frozen_during_warmup"] == ["encoder"]


def test_augment_none_writes_the_config_a_run_without_it_writes(data: dict[str, Path], tmp_path: Path) -> None:
    configs = []
    for name, extra in (("plain", []), ("none", ["--augment", "none", "--warmup-frozen", "0", "--lr-decay", "1"])):
        out = tmp_path / name
        done = espzoo(*_base(DEMO, data, out), "--max-epoch", "1", *extra)
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout)["recipe"] == {"augment": "none", "schedule": "none"}
        configs.append((out / "config.yaml").read_text(encoding="utf-8"))
        espnet_config = (out / "espnet" / "config.yaml").read_text(encoding="utf-8")
        assert "specaug: null" in espnet_config and "noise_scp: null" in espnet_config
        assert "exclude_weight_decay: false" in espnet_config and "freeze_param: []" in espnet_config
        assert not (out / "warmup").exists() and not (out / "data" / "train_sp").exists()
    assert configs[0] == configs[1]


def test_a_warmup_on_a_checkpoint_an_older_espnet_saved_keeps_its_names(everything: dict) -> None:
    """The demo model was saved by ESPnet 202511: on 202611 its subsampling tensors load under new names. The
    warm-up's run saves under the installed names (its last epoch starts the second run), the second run's models
    are saved under the pretrained names again, and ESPnet loads the result strictly; on both generations."""
    import sys

    import torch

    from espzoo.models.bundle import open_bundle

    out = everything["out"]
    pretrained = list(torch.load(open_bundle(DEMO).checkpoint, map_location="cpu", weights_only=True))
    assert list(torch.load(out / "model.pth", map_location="cpu", weights_only=True)) == pretrained
    loader = Path(__file__).resolve().parent / "espnet_load.py"
    wav = next(iter((SPEECH / "test" / "audio").iterdir()))
    loaded = subprocess.run([sys.executable, str(loader), "--cwd", str(out), "--config", str(out / "config.yaml"),
                             "--model", str(out / "model.pth"), str(wav)], capture_output=True, text=True, timeout=600)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    result = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert result["missing"] == [] and result["unexpected"] == [], result
