"""espzoo.train: real ESPnet training runs (tiny conformer, committed speech), stop/resume, OUT, refusals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from _paths import SPEECH_ROOT

from espzoo.data.convert import prepare
from espzoo.data.sources import Dataset
from espzoo.errors import TrainError
from espzoo.models.tiny import TINY_ASR_CONFIG
from espzoo.train import child as train_child
from espzoo.train.driver import run
from espzoo.train.log import iter_epochs, parse_results_line
from espzoo.train.options import (
    RUN_KEYS,
    EpochReport,
    TrainOptions,
    apply_override,
    estimate_steps_per_epoch,
    text_shapes,
    write_train_config,
)
from espzoo.transfer.vocab import Vocabulary

SPEECH = SPEECH_ROOT / "en"
ENCODER = dict(TINY_ASR_CONFIG["encoder_conf"])  # the one tiny architecture (espzoo.models.tiny)


@dataclass
class Tiny:
    """A pretrained-model stand-in: its config (with run keys, as a hub config has), stats, init checkpoint."""

    base: dict[str, Any]
    vocabulary: Vocabulary
    stats: Path
    init: Path
    train: Dataset
    valid: Dataset


def _subset(source: Path, dest: Path, count: int) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("wav.scp", "text"):
        lines = (source / name).read_text(encoding="utf-8").splitlines()[:count]
        if name == "wav.scp":
            lines = [f"{k} {(source / v).resolve()}" for k, v in (line.split(maxsplit=1) for line in lines)]
        (dest / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dest


def _build_model(config: dict[str, Any]) -> Any:
    import torch

    from espzoo.models.espnet_env import import_asr_task

    asr_task = import_asr_task()
    args = asr_task.get_parser().parse_args(["--token_list", "unused"])
    for key, value in config.items():
        setattr(args, key, value)
    torch.manual_seed(0)
    return asr_task.build_model(args)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    import torch

    root = tmp_path_factory.mktemp("tiny")
    texts = [line.split(maxsplit=1)[1] for line in (SPEECH / "train" / "text").read_text().splitlines()]
    tokens = ["<blank>", "<unk>", "<space>", *sorted({c for t in texts for c in t} - {" "}), "<sos/eos>"]
    rng = np.random.default_rng(0)
    mean, var = rng.normal(-4.0, 1.0, 80), rng.uniform(1.0, 4.0, 80)
    stats = root / "pretrained_stats.npz"
    np.savez(stats, count=np.array(1000), sum=mean * 1000, sum_square=(var + mean**2) * 1000)
    base = {
        "output_dir": "exp/asr_pretrained",  # run keys a hub config carries; write_train_config drops them
        "ngpu": 1,
        "batch_bins": 35000000,
        "optim": "adam",
        "optim_conf": {"lr": 0.002, "betas": [0.9, 0.98], "eps": 1e-9},
        "frontend": "default",
        "frontend_conf": {"n_fft": 512, "hop_length": 160, "fs": 16000},
        "normalize": "global_mvn",
        "normalize_conf": {"stats_file": str(stats)},
        "encoder": "conformer",
        "encoder_conf": ENCODER,
        "decoder": "transformer",
        "decoder_conf": TINY_ASR_CONFIG["decoder_conf"],
        "model_conf": TINY_ASR_CONFIG["model_conf"],
    }
    # Until transfer.apply_plan writes one, the init checkpoint is the state dict of the model ESPnet builds
    # from the training config itself: exactly the new model's tensors.
    model = _build_model(dict(base, token_list=tokens, token_type="char"))
    init = root / "init.pth"
    torch.save(model.state_dict(), init)
    train = prepare(_subset(SPEECH / "train", root / "src" / "train", 24), root / "data" / "train", sample_rate=16000)
    valid = prepare(_subset(SPEECH / "dev", root / "src" / "dev", 4), root / "data" / "dev", sample_rate=16000)
    return Tiny(base, Vocabulary(tokens, "char"), stats, init, train, valid)


def _run(tiny: Tiny, out: Path, **kwargs: Any) -> Any:
    options = kwargs.pop("options", TrainOptions(max_epoch=2))
    return run(
        tiny.base,
        vocabulary=tiny.vocabulary,
        init_checkpoint=kwargs.pop("init", tiny.init),
        stats_file=kwargs.pop("stats", tiny.stats),
        train=kwargs.pop("train", tiny.train),
        valid=tiny.valid,
        out=out,
        options=options,
        **kwargs,
    )


RUNNER = """
import json, sys
from espzoo.data.sources import load_dataset
from espzoo.errors import TrainInterrupted
from espzoo.train.driver import run
from espzoo.train.options import TrainOptions
from espzoo.transfer.vocab import Vocabulary
spec = json.loads(sys.argv[1])
try:
    run(spec["base"], vocabulary=Vocabulary(spec["tokens"], "char"), init_checkpoint=spec["init"],
        stats_file=spec["stats"], train=load_dataset(spec["train"]), valid=load_dataset(spec["valid"]),
        out=spec["out"], options=TrainOptions(max_epoch=5))
except TrainInterrupted as err:
    print(err, file=sys.stderr)
    sys.exit(3)
"""


def _wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and text in path.read_text(errors="replace"):
            return
        assert proc.poll() is None, f"runner exited early: {proc.communicate()}"
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never appeared in {path}")


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


@pytest.mark.slow
def test_interrupt_resume_and_experiment_dir(tiny: Tiny, tmp_path: Path) -> None:
    import torch

    out = tmp_path / "exp"
    spec = {
        "base": tiny.base,
        "tokens": tiny.vocabulary.tokens,
        "init": str(tiny.init),
        "stats": str(tiny.stats),
        "train": str(tiny.train.dir),
        "valid": str(tiny.valid.dir),
        "out": str(out),
    }
    # Like Ctrl-C in a terminal: SIGINT to the runner's process group, right after epoch 1's results (while
    # ESPnet saves its checkpoint, which the stop must wait for).
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, json.dumps(spec)], start_new_session=True, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for(out / "train.log", "1epoch results", runner)
        os.killpg(runner.pid, signal.SIGINT)
        _, stderr = runner.communicate(timeout=120)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
    assert runner.returncode == 3, stderr
    assert not _processes_mentioning(str(out / "espnet")), "ESPnet's training process outlived the stop"
    # On an idle machine an epoch can finish before the signal lands: the stop comes after epoch 1 or a later one.
    stopped = int(re.search(r"Training stopped after epoch (\d+)", stderr).group(1))
    assert 1 <= stopped < 5 and "resume=True" in stderr
    checkpoint = out / "espnet" / "checkpoint.pth"
    with zipfile.ZipFile(checkpoint) as zf:  # complete, not cut off mid-write
        assert zf.namelist()
    assert not (out / "model.pth").exists() and not (out / "config.yaml").exists()
    assert not (out / "espnet" / "5epoch.pth").exists()

    with pytest.raises(TrainError, match="unfinished training; pass resume=True"):
        _run(tiny, out, options=TrainOptions(max_epoch=5))

    reports: list[EpochReport] = []
    stages: list[str] = []
    result = _run(
        tiny,
        out,
        options=TrainOptions(max_epoch=5, resume=True),
        plan={"rows": [], "summary": "test"},
        provenance={"source": {"repo_id": "espzoo-test/tiny", "commit": "c" * 40}},
        on_epoch=reports.append,
        on_stage=stages.append,
    )
    log = (out / "train.log").read_text()
    assert "The training was resumed using" in log
    assert [r.epoch for r in reports] == list(range(stopped + 1, 6)) and result.epochs == 5
    assert all(r.max_epoch == 5 and r.valid_acc is not None and r.loss is not None for r in reports)
    assert reports[-1].eta_s == 0.0 and reports[0].eta_s is not None and reports[0].eta_s > 0
    assert stages == ["train", "average", "done"]
    assert [epoch for epoch, _ in iter_epochs(out / "train.log")] == [1, 2, 3, 4, 5]
    assert result.averaged == "valid.acc.ave_5best.pth" and result.normalize == "pretrained"

    # OUT: everything evaluate/export need, paths inside OUT relative to it.
    for name in ("config.yaml", "model.pth", "tokens.txt", "feats_stats.npz", "plan.json", "provenance.json"):
        assert (out / name).is_file(), name
    text = (out / "config.yaml").read_text()
    assert str(out) not in text
    config = yaml.safe_load(text)
    assert config["normalize_conf"]["stats_file"] == "feats_stats.npz"
    assert config["token_list"] == tiny.vocabulary.tokens
    assert (out / "tokens.txt").read_text().splitlines() == tiny.vocabulary.tokens
    assert config["max_epoch"] == 5 and config["optim_conf"]["lr"] == 5e-4
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["source"]["commit"] == "c" * 40 and provenance["versions"]["espnet"] == metadata.version("espnet")
    assert [h["epoch"] for h in provenance["history"]] == list(range(stopped + 1, 6))
    assert json.loads((out / "plan.json").read_text())["summary"] == "test"

    config["normalize_conf"]["stats_file"] = str(out / "feats_stats.npz")
    model = _build_model(config)
    state = torch.load(out / "model.pth", map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    # The average of the 5 epochs, not the init checkpoint.
    init = torch.load(tiny.init, weights_only=True)
    assert not torch.equal(
        state["encoder.encoders.0.feed_forward.w_1.weight"], init["encoder.encoders.0.feed_forward.w_1.weight"]
    )

    with pytest.raises(TrainError, match="already holds a trained model"):
        _run(tiny, out)


@pytest.mark.slow
def test_new_stats_are_collected_and_not_overwritten(tiny: Tiny, tmp_path: Path) -> None:
    import torch

    out = tmp_path / "exp"
    result = _run(tiny, out, stats=None, options=TrainOptions(max_epoch=1))
    assert result.normalize == "collected"
    conf = yaml.safe_load((out / "conf" / "train.yaml").read_text())
    assert conf["init_param"] == [f"{tiny.init}:::normalize"]
    collected = np.load(out / "feats_stats.npz")
    assert int(collected["count"]) > 1000  # frames of the 24 training utterances, not the fake pretrained count
    mean = collected["sum"] / collected["count"]
    state = torch.load(out / "model.pth", weights_only=True)
    np.testing.assert_allclose(state["normalize.mean"].numpy(), mean, rtol=1e-4)
    assert (out / "collect_stats.log").is_file() and not (out / ".stats.tmp").exists()


@pytest.mark.slow
def test_init_checkpoint_missing_tensors_is_refused(tiny: Tiny, tmp_path: Path) -> None:
    import torch

    state = torch.load(tiny.init, weights_only=True)
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("decoder.")}, partial)
    with pytest.raises(TrainError, match=r"lacks \d+ of the model's \d+ tensors \(decoder\."):
        _run(tiny, tmp_path / "exp", init=partial)
    assert not (tmp_path / "exp" / "model.pth").exists()


def test_refusals_before_any_work(tiny: Tiny, tmp_path: Path) -> None:
    with pytest.raises(TrainError, match="use_amp .* needs a GPU"):
        _run(tiny, tmp_path / "a", options=TrainOptions(use_amp=True))
    with pytest.raises(TrainError, match="init checkpoint .* does not exist"):
        _run(tiny, tmp_path / "b", init=tmp_path / "nope.pth")
    at_8k = replace(tiny.train, sample_rate=8000)
    with pytest.raises(TrainError, match="train set is at 8000 Hz but the model expects 16000 Hz"):
        _run(tiny, tmp_path / "c", train=at_8k)
    with pytest.raises(TrainError, match="not key=value"):
        _run(tiny, tmp_path / "d", options=TrainOptions(conf=["optim_conf.lr"]))
    assert not any((tmp_path / d).exists() for d in "abcd")  # refused before OUT was created


def test_write_train_config(tiny: Tiny) -> None:
    options = TrainOptions(max_epoch=10, lr=1e-4, conf=["encoder_conf.dropout_rate=0.2", "optim_conf.lr=3e-4"])
    config = write_train_config(
        tiny.base,
        vocabulary=tiny.vocabulary,
        init_checkpoint=tiny.init,
        stats_file=tiny.stats,
        options=options,
        steps_per_epoch=50,
    )
    assert "output_dir" not in config and "ngpu" not in config  # the pretrained run's own settings are gone
    assert config["encoder_conf"]["num_blocks"] == 2 and config["encoder_conf"]["dropout_rate"] == 0.2
    assert config["optim_conf"] == {"lr": 3e-4, "betas": [0.9, 0.98], "eps": 1e-9, "weight_decay": 0.0}
    assert config["scheduler"] == "warmuplr" and config["scheduler_conf"] == {"warmup_steps": 50}  # 10% of 500
    assert config["init_param"] == [str(tiny.init)] and config["ignore_init_mismatch"] is False
    assert config["best_model_criterion"] == [["valid", "acc", "max"]] and config["keep_nbest_models"] == 5
    assert config["batch_bins"] == 1_000_000 and config["token_list"] == tiny.vocabulary.tokens
    ctc_only = write_train_config(
        dict(tiny.base, model_conf={"ctc_weight": 1.0}),
        vocabulary=tiny.vocabulary,
        init_checkpoint=None,
        stats_file=None,
        options=TrainOptions(),
    )
    assert ctc_only["best_model_criterion"] == [["valid", "loss", "min"]]
    assert ctc_only["normalize_conf"]["stats_file"] is None and ctc_only["init_param"] == []
    assert {"optim", "scheduler", "max_epoch"} <= RUN_KEYS


def test_apply_override() -> None:
    config: dict[str, Any] = {"a": 1, "encoder_conf": {"x": 1}}
    apply_override(config, "encoder_conf.x=2")
    apply_override(config, "new.deep.key=[1, 2]")
    apply_override(config, "flag=true")
    apply_override(config, "lr=1e-4")
    assert config == {"a": 1, "encoder_conf": {"x": 2}, "new": {"deep": {"key": [1, 2]}}, "flag": True, "lr": 1e-4}
    with pytest.raises(TrainError, match="a is not a mapping"):
        apply_override(config, "a.b=1")


# Lines as ESPnet 202511 logs them (taken from a train.log of the tiny model above).
REAL_LINES = [
    "[host] 2026-11-24 14:36:52,131 (trainer:394) INFO: 1epoch results: [train] iter_time=0.209, "
    "forward_time=1.636, loss_ctc=122.181, loss_att=106.252, acc=0.024, loss=111.031, backward_time=1.718, "
    "grad_norm=56.242, clip=100.000, loss_scale=1.000, optim_step_time=0.418, optim0_lr0=2.640e-04, "
    "train_time=4.011, time=20.06 seconds, total_count=5, gpu_max_cached_mem_GB=0.000, [valid] loss_ctc=112.967, "
    "cer_ctc=1.000, loss_att=108.951, acc=0.024, cer=1.160, wer=1.000, loss=110.155, time=0.6 seconds, "
    "total_count=1, gpu_max_cached_mem_GB=0.000",
    "[host] 2026-11-24 15:36:52,131 (trainer:394) INFO: 12epoch results: [train] loss=3.5e-05, acc=0.991, "
    "time=1 hour, 2 minutes and 3.5 seconds, total_count=1200, [valid] loss=1.234e+03, acc=0.812, "
    "time=5 minutes and 2 seconds",
]


def test_parse_results_lines() -> None:
    epoch, sections = parse_results_line(REAL_LINES[0]) or (0, {})
    assert epoch == 1
    assert sections["train"]["loss"] == 111.031 and sections["train"]["optim0_lr0"] == 2.64e-4
    assert sections["train"]["time"] == "20.06 seconds" and sections["train"]["total_count"] == 5
    assert sections["valid"]["acc"] == 0.024 and sections["valid"]["loss"] == 110.155
    epoch, sections = parse_results_line(REAL_LINES[1]) or (0, {})
    assert epoch == 12 and sections["train"]["time"] == "1 hour, 2 minutes and 3.5 seconds"
    assert sections["train"]["loss"] == 3.5e-05 and sections["valid"]["loss"] == 1234.0
    assert sections["valid"]["time"] == "5 minutes and 2 seconds" and sections["train"]["total_count"] == 1200
    assert parse_results_line("[host] ... INFO: 2/3epoch started") is None


@pytest.mark.parametrize("batch_bins", [200_000, 1_000_000, 3_000_000])
def test_steps_per_epoch_match_espnet_sampler(tiny: Tiny, tmp_path: Path, batch_bins: int) -> None:
    from espnet2.samplers.num_elements_batch_sampler import NumElementsBatchSampler

    config = write_train_config(
        tiny.base, vocabulary=tiny.vocabulary, init_checkpoint=None, stats_file=tiny.stats, options=TrainOptions()
    )
    text_shape = text_shapes(tiny.train, config, tmp_path)
    assert text_shape.read_text().splitlines()[0].endswith(f",{len(tiny.vocabulary.tokens)}")
    sampler = NumElementsBatchSampler(batch_bins, [str(tiny.train.speech_shape), str(text_shape)])
    assert estimate_steps_per_epoch(tiny.train, text_shape, batch_bins) == len(sampler)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stop_signal_ends_the_child_group(sig: signal.Signals, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C (SIGINT) or a scheduler's SIGTERM to espzoo stops the training process group and says how to resume."""
    import threading

    pass
    from espzoo.errors import TrainInterrupted
    from espzoo.train.child import _supervise

    # The background `sleep` ignores SIGINT (as sh makes it), so the stop must escalate; don't wait 30 s for it.
    monkeypatch.setattr(train_child, "STOP_GRACE_S", 1.0)

    child = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60; wait"], start_new_session=True)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), sig))
    timer.start()
    try:
        with pytest.raises(TrainInterrupted, match="before the first epoch finished; continue it with resume=True"):
            _supervise(child, None)
    finally:
        timer.cancel()
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    assert child.returncode is not None
    with pytest.raises(ProcessLookupError):  # the whole group, the grandchild `sleep` too
        os.killpg(child.pid, 0)


# ---------------------------------------------------------------------------------------------------------
# OUT is safe: the trainer dies with espzoo, one run at a time, cut-off checkpoints, untrusted checkpoint.pth


def _spec(tiny: Tiny, out: Path) -> dict[str, Any]:
    return {"base": tiny.base, "tokens": tiny.vocabulary.tokens, "init": str(tiny.init), "stats": str(tiny.stats),
            "train": str(tiny.train.dir), "valid": str(tiny.valid.dir), "out": str(out)}


def _gone_within(text: str, seconds: float) -> list[str]:
    deadline = time.monotonic() + seconds
    while (left := _processes_mentioning(text)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.mark.slow
def test_trainer_dies_with_a_killed_espzoo(tiny: Tiny, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, json.dumps(_spec(tiny, out))], start_new_session=True,
                              stderr=subprocess.DEVNULL)
    try:
        _wait_for(out / "train.log", "epoch started", runner)
        assert _processes_mentioning(str(out / "espnet")), "ESPnet's trainer is not running"
        runner.kill()  # SIGKILL: no handler runs, nothing is cleaned up by espzoo itself
        runner.wait(timeout=10)
        assert not _gone_within(str(out / "espnet"), 10), "ESPnet's trainer outlived a killed espzoo"
    finally:
        if runner.poll() is None:
            runner.kill()


HOLDER = """
import sys, time
from espzoo.train.outdir import lock_out
with lock_out(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_a_second_run_on_a_locked_out_is_refused_and_touches_nothing(tiny: Tiny, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"  # type: ignore[union-attr]
        before = _tree(out)
        refusal = rf"{re.escape(str(out))} is in use by another espzoo run \(pid {holder.pid}\)"
        with pytest.raises(TrainError, match=refusal):
            _run(tiny, out)
        assert _tree(out) == before
    finally:
        holder.kill()
        holder.wait()
    from espzoo.train.outdir import lock_out

    with lock_out(out), lock_out(out):  # free again once the holder is gone; re-entrant within one process
        pass


@pytest.fixture(scope="module")
def trained(tiny: Tiny, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-epoch OUT (copy it before changing anything)."""
    out = tmp_path_factory.mktemp("trained") / "exp"
    command = ["espzoo", "finetune", "m", "--conf", f"hf_token={SECRET}", "--out", str(out)]
    _run(tiny, out, options=TrainOptions(max_epoch=2, keep_nbest=2), provenance={"command": command})
    return out


SECRET = "hf_" + "Secret9" * 4


@pytest.mark.slow
def test_a_cut_off_epoch_checkpoint_is_left_out_of_the_average(tiny: Tiny, trained: Path, tmp_path: Path) -> None:
    import shutil

    import torch

    out = tmp_path / "exp"
    shutil.copytree(trained, out, symlinks=True)
    epoch2 = out / "espnet" / "2epoch.pth"
    epoch2.write_bytes(epoch2.read_bytes()[: epoch2.stat().st_size // 2])  # as a full disk leaves it
    result = _run(tiny, out, options=TrainOptions(max_epoch=3, keep_nbest=2, resume=True))
    assert result.epochs == 3 and (out / "model.pth").is_file()
    assert SECRET not in (out / "provenance.json").read_text() and "hf_token=<redacted>" in (
        out / "provenance.json").read_text()
    assert (out / "provenance.json").stat().st_mode & 0o777 == 0o666 & ~_umask()  # not mkstemp's 0600
    assert any("2epoch.pth was cut off while being written" in note for note in result.notes), result.notes
    assert (out / "espnet" / "2epoch.pth.incomplete").is_file()
    assert "averaging without epoch(s) [2]" in (out / "train.log").read_text()
    state = torch.load(out / "model.pth", weights_only=True)
    assert "encoder.encoders.0.feed_forward.w_1.weight" in state


PLANTED = """
import os, sys, torch
class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {sys.argv[2]}",))
torch.save({"model": {}, "reporter": Payload(), "optimizers": []}, sys.argv[1])
"""


@pytest.mark.slow
def test_a_planted_pickle_in_checkpoint_pth_is_refused(tiny: Tiny, trained: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "exp"
    shutil.copytree(trained, out, symlinks=True)
    marker = tmp_path / "pwned"
    subprocess.run([sys.executable, "-c", PLANTED, str(out / "espnet" / "checkpoint.pth"), str(marker)], check=True)
    with pytest.raises(TrainError, match=r"checkpoint.pth is not a training state ESPnet wrote \(it asks to run "
                                         r"posix.system\), so it was not loaded") as refused:
        _run(tiny, out, options=TrainOptions(max_epoch=3, resume=True))
    assert "\n" not in str(refused.value) and not marker.exists()
    assert not (out / "espnet" / "3epoch.pth").exists()


def test_a_silent_child_is_stopped_as_stalled_but_a_slow_busy_one_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No wall-clock limit on training: only a log that stays silent for stall_s stops the child."""
    pass
    from espzoo.train.child import _supervise
    from espzoo.train.log import _LogFollower

    monkeypatch.setattr(train_child, "STOP_GRACE_S", 1.0)  # the background sleep ignores SIGINT: escalate sooner

    log = tmp_path / "busy.log"
    with log.open("wb") as f:  # talks every 0.3 s for 4 s: longer than stall_s in all, never silent that long
        busy = subprocess.Popen(["sh", "-c", "for i in $(seq 13); do echo step $i; sleep 0.3; done"], stdout=f,
                                start_new_session=True)
    assert _supervise(busy, _LogFollower(log, 0, None, time.monotonic()), stall_s=2.0) == 0

    log = tmp_path / "silent.log"
    with log.open("wb") as f:
        silent = subprocess.Popen(["sh", "-c", "echo started; sleep 60 & sleep 60; wait"], stdout=f,
                                  start_new_session=True)
    try:
        with pytest.raises(TrainError, match=r"wrote nothing to .*silent.log for 2 seconds and looks stalled") as err:
            _supervise(silent, _LogFollower(log, 0, None, time.monotonic()), stall_s=2.0)
        assert "\n" not in str(err.value)
    finally:
        if silent.poll() is None:
            os.killpg(silent.pid, signal.SIGKILL)
    with pytest.raises(ProcessLookupError):  # the whole group was stopped
        os.killpg(silent.pid, 0)


def test_redaction_of_command_lines_and_configs() -> None:
    from espzoo.utils.redact import REDACTED, redact

    token = "hf_" + "x9" * 12
    argv = ["espzoo", "finetune", "m", "--conf", f"hf_token={token}", "--hub-token", token, "--conf",
            "token_type=bpe", "-H", f"Authorization: Bearer {token}", f"--conf=api_key={token}"]
    assert token not in json.dumps(redact(argv))
    assert redact(argv)[6] == REDACTED and "token_type=bpe" in redact(argv)
    config = {"token_list": ["<blank>", token], "wandb_token": "abc", "token_type": "bpe", "optim_conf": {"lr": 1}}
    assert redact(config) == {"token_list": ["<blank>", token], "wandb_token": REDACTED, "token_type": "bpe",
                              "optim_conf": {"lr": 1}}


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.mark.slow
def test_a_cut_off_checkpoint_pth_restarts_the_run_on_resume(tiny: Tiny, trained: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "exp"
    shutil.copytree(trained, out, symlinks=True)
    (out / "model.pth").unlink()  # as a run killed mid-training leaves it
    checkpoint = out / "espnet" / "checkpoint.pth"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    result = _run(tiny, out, options=TrainOptions(max_epoch=2, keep_nbest=2, resume=True))
    assert result.epochs == 2 and [r.epoch for r in result.history] == [1, 2]
    assert any("restarts from epoch 1" in note for note in result.notes), result.notes
    assert (out / "espnet.incomplete-1" / "checkpoint.pth").is_file() and (out / "model.pth").is_file()


def test_a_legacy_pickle_checkpoint_pth_is_named_as_such_on_resume(tiny: Tiny, trained: Path, tmp_path: Path) -> None:
    """checkpoint.pth in torch's legacy pickle format (never what ESPnet writes, so put there by someone else) is
    not taken for a cut-off file and set aside: --resume is refused in one sentence that says what it is, and
    nothing in OUT moves (issue 27: 16)."""
    import shutil

    import torch

    from espzoo.errors import TrainError

    out = tmp_path / "exp"
    shutil.copytree(trained, out, symlinks=True)
    (out / "model.pth").unlink()
    checkpoint = out / "espnet" / "checkpoint.pth"
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    torch.save(state, checkpoint, _use_new_zipfile_serialization=False)
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    with pytest.raises(TrainError) as refused:
        _run(tiny, out, options=TrainOptions(max_epoch=3, keep_nbest=2, resume=True))
    assert str(refused.value).startswith(f"{checkpoint} is a legacy-format pickle, not the zip file torch and ESPnet "
                                         "write, so it was neither loaded nor set aside as cut off")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before
    assert not (out / "espnet.incomplete-1").exists()


# ---------------------------------------------------------------------------------------------------------
# Warm start: the training child imports ESPnet while espzoo prepares, and is gone when it is not used


def _cpu_seconds_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_a_warm_started_child_imports_before_it_is_told_anything_and_an_unused_one_is_stopped(tmp_path: Path) -> None:
    from espzoo.train.child import warm_start
    from espzoo.train.outdir import lock_out

    out = tmp_path / "exp"
    marker = f"--espzoo-standby --output_dir {out.resolve() / 'espnet'}"
    with lock_out(out), warm_start(out):
        deadline = time.monotonic() + 60
        while not (waiting := _processes_mentioning(marker)) and time.monotonic() < deadline:
            time.sleep(0.2)  # seen once in a full run on a loaded machine: not yet listed in /proc at first look
        assert len(waiting) == 1, waiting
        pid = int(waiting[0].split(":")[0])
        deadline = time.monotonic() + 300
        while _cpu_seconds_of(pid) < 2.0:  # importing ESPnet: well over 2 CPU seconds, with no arguments yet
            assert time.monotonic() < deadline, "the standby child never got to work"
            time.sleep(0.2)
    assert not _gone_within(marker, 10), "an unused standby child outlived its block"
    assert sorted(p.name for p in out.iterdir()) == [".espzoo.lock"]  # it wrote nothing into OUT


def test_a_warm_started_child_that_dies_importing_espnet_says_why(
    tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broken ESPnet install, found after run() sent the arguments but before the child had its log: what it
    printed still reaches train.log and the error."""
    broken = tmp_path / "broken" / "espnet2" / "tasks"
    broken.mkdir(parents=True)
    (broken.parent / "__init__.py").write_text("")
    (broken / "__init__.py").write_text("")
    # Dies only once the arguments are waiting on its pipe (readable, not read): after run() sent them.
    (broken / "asr.py").write_text(
        "import os, select\nselect.select([int(os.environ['ESPZOO_GO_FD'])], [], [])\n"
        "raise ImportError('this espnet2 is broken')\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "broken"))  # the training child's, not this process's
    out = tmp_path / "exp"
    with pytest.raises(TrainError, match=r"ESPnet's training failed \(exit 1\)(.|\n)*this espnet2 is broken"):
        _run(tiny, out)
    assert "this espnet2 is broken" in (out / "train.log").read_text()
    assert not _processes_mentioning(f"--espzoo-standby --output_dir {out / 'espnet'}")


# ---------------------------------------------------------------------------------------------------------
# `espzoo finetune` leaves ESPnet to its training child (trainer.in_standby)

# Runs the CLI and, at exit, writes the names of every module its process imported (argv[1]) as JSON.
_RECORDING_CLI = (
    "import atexit, json, sys\n"
    "record = sys.argv.pop(1)\n"
    "atexit.register(lambda: open(record, 'w').write(json.dumps(sorted(sys.modules))))\n"
    "from espzoo.cli.main import main\n"
    "sys.argv[0] = 'espzoo'\n"
    "main()\n"
)


def _finetune_recording_imports(model: Path, out: Path, *extra: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """`espzoo finetune MODEL` (1 epoch, 8 committed utterances) in a fresh process; its result, and the
    modules of torch or of ESPnet's model and training code that process imported itself."""
    data = _subset(SPEECH / "train", out.parent / "train", 8)
    record = out.parent / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", _RECORDING_CLI, str(record), "finetune", str(model), "--train", str(data),
         "--valid", str(SPEECH / "dev"), "--out", str(out), "--max-epoch", "1", "--json", *extra],
        capture_output=True, text=True, timeout=900,
    )
    modules = json.loads(record.read_text())
    heavy = [m for m in modules if m.split(".")[0] == "torch" or m.startswith(("espnet2.tasks", "espnet2.asr",
                                                                                "espnet2.train", "espnet.nets"))]
    return done, heavy


def test_espzoo_finetune_never_imports_espnet_or_torch_itself(tiny_repo_char: Path, tmp_path: Path) -> None:
    """The model work of the transfer (ESPnet builds the new model, torch writes init.pth) runs in the training
    child, which imports ESPnet anyway while espzoo checks the data: on a busy machine the two processes do not
    both import it (issue 11). Its tokenizers (espnet2.text, no torch) are all espzoo's own process uses."""
    out = tmp_path / "exp"
    done, heavy = _finetune_recording_imports(tiny_repo_char, out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert heavy == [], heavy[:20]
    assert (out / "model.pth").is_file() and (out / "init" / "init.pth").is_file()
    plan = json.loads((out / "plan.json").read_text())
    assert plan["summary"]["actions"]["load"]["tensors"] > 0  # the pretrained weights were planned in


def test_a_transfer_error_in_the_training_child_is_espzoos_one_sentence(tiny_repo_char: Path, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    done, heavy = _finetune_recording_imports(tiny_repo_char, out, "--exclude", "decodr")
    assert heavy == [], heavy[:20]  # so the plan that refused it ran in the child
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "the exclude 'decodr' matches no tensor (closest: " in errors[0], done.stderr
    assert not (out / "init").exists() and not (out / "conf").exists()
    assert not _gone_within(f"--espzoo-standby --output_dir {out.resolve() / 'espnet'}", 10)


def test_in_standby_runs_in_the_child_raises_its_errors_here_and_falls_back_to_this_process(tmp_path: Path) -> None:
    from espzoo.errors import VocabularyError
    from espzoo.train.child import in_standby, warm_start
    from espzoo.train.outdir import lock_out
    from espzoo.transfer.vocab import parse_vocab_spec

    out = tmp_path / "exp"
    marker = f"--espzoo-standby --output_dir {out.resolve() / 'espnet'}"
    assert in_standby(out, os.getpid) == os.getpid()  # no standby child: here
    with lock_out(out), warm_start(out):
        child = in_standby(out, os.getpid)
        assert child != os.getpid() and any(p.startswith(f"{child}:") for p in _processes_mentioning(marker))
        with pytest.raises(VocabularyError, match=r"bpe:many") as raised:  # raised there, the same class here
            in_standby(out, parse_vocab_spec, "bpe:many")
        with pytest.raises(VocabularyError) as here:
            parse_vocab_spec("bpe:many")
        assert str(raised.value) == str(here.value)
        with pytest.raises(ValueError, match="invalid literal"):  # not espzoo's error: redone here, failing here
            in_standby(out, int, "x")
        assert in_standby(out, os.getpid) == child  # still there, still waiting
        os.killpg(child, signal.SIGKILL)  # a child that died (out of memory, say): the call is made here
        assert in_standby(out, os.getpid) == os.getpid()
        assert in_standby(out, os.getpid) == os.getpid()  # and the dead one is forgotten
    assert not _gone_within(marker, 10)
