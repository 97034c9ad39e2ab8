"""`espzoo finetune` end to end, as a user runs it: a tiny real ESPnet model served by the mirror on
127.0.0.1, pulled through huggingface_hub, fine-tuned on Spanish speech with a new BPE vocabulary by
ESPnet's trainer, evaluated, exported, served again and pulled back."""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from _hubtools import ESPZOO, SPEECH, client_env, subset

from espzoo.publish.hub_layout import ExportOptions, export
from espzoo.serve.server import MirrorServer

REPO = "espzoo-test/tiny-char"


def espzoo(args: list[str], endpoint: str, hf_home: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([ESPZOO, *args], env=client_env(endpoint, hf_home), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def served(mirror_root: Path):
    server = MirrorServer(mirror_root)
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("es")
    return {
        "train": subset(SPEECH / "train", root / "train", 24),
        "dev": subset(SPEECH / "dev", root / "dev", 6),
        "test": subset(SPEECH / "test", root / "test", 5),
    }


@pytest.fixture(scope="module")
def finetuned(served: str, data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One real fine-tune of 1 epoch, then resumed to 2: shared by the tests below (it is the slow part)."""
    work = tmp_path_factory.mktemp("ft")
    hf_home, out = work / "hf", work / "exp"
    base = ["finetune", REPO, "--train", str(data["train"]), "--valid", str(data["dev"]), "--out", str(out),
            "--vocab", "bpe:45", "--exclude", "decoder", "--batch-bins", "200000", "--json"]
    first = espzoo([*base, "--max-epoch", "1"], served, hf_home)
    assert first.returncode == 0, first.stderr[-3000:]
    # Extending a finished run is refused without --resume, then continues with it.
    again = espzoo([*base, "--max-epoch", "2"], served, hf_home)
    assert again.returncode != 0 and "--resume" in again.stderr
    second = espzoo([*base, "--max-epoch", "2", "--resume"], served, hf_home)
    assert second.returncode == 0, second.stderr[-3000:]
    return {"out": out, "hf_home": hf_home, "first": json.loads(first.stdout), "second": json.loads(second.stdout)}


def test_finetune_writes_a_complete_experiment(finetuned: dict, served: str) -> None:
    out = finetuned["out"]
    assert finetuned["first"]["epochs"] == 1 and finetuned["second"]["epochs"] == 2
    for name in ("config.yaml", "model.pth", "tokens.txt", "bpe.model", "feats_stats.npz", "plan.json",
                 "provenance.json", "train.log"):
        assert (out / name).is_file(), name
    config = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    tokens = (out / "tokens.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert config["token_list"] == tokens and config["token_type"] == "bpe" and tokens[0] == "<blank>"
    assert config["bpemodel"] == "bpe.model"  # relative to OUT: the folder can move
    # The n-best average's cap followed the resumed run's max_epoch (2), not the first run's (1).
    assert config["keep_nbest_models"] == 2

    provenance = json.loads((out / "provenance.json").read_text(encoding="utf-8"))
    listing = json.loads(espzoo(["pull", REPO, "--json"], served, finetuned["hf_home"]).stdout)
    assert provenance["source"]["repo_id"] == REPO
    assert provenance["source"]["commit"] == listing["commit"] and len(listing["commit"]) == 40
    assert provenance["versions"]["espnet"] == metadata.version("espnet")
    assert provenance["command"][:2] == ["espzoo", "finetune"]


def test_the_plan_excluded_the_decoder_and_transplanted_shared_rows(finetuned: dict) -> None:
    plan = json.loads((finetuned["out"] / "plan.json").read_text(encoding="utf-8"))
    actions = {row["target_key"]: row["action"] for row in plan["rows"]}
    assert all(action == "exclude" for key, action in actions.items() if key.startswith("decoder."))
    assert actions["ctc.ctc_lo.weight"] == "transplant"
    assert all(actions[key] == "load" for key in actions if key.startswith("encoder."))


def test_finetuned_model_evaluates_and_transcribes(finetuned: dict, data: dict[str, Path], served: str) -> None:
    result = espzoo(["evaluate", str(finetuned["out"]), "--data", str(data["test"]), "--json", "--beam", "1"],
                    served, finetuned["hf_home"])
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["utterances"] == 5 and report["cer"] >= 0 and report["wer"] >= 0


def test_export_is_pullable_and_transcribes_the_same(finetuned: dict, data: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "root"
    exported = espzoo(["export", str(finetuned["out"]), "--out", str(root / "me" / "tiny-es")], "http://127.0.0.1:9",
                      tmp_path / "unused")
    assert exported.returncode == 0, exported.stderr[-2000:]
    audio = sorted(Path(line.split(maxsplit=1)[1]) for line in (data["test"] / "wav.scp").read_text().splitlines())
    server = MirrorServer(root)
    url = server.start()
    try:
        hf_home = tmp_path / "hf"
        pulled = espzoo(["pull", "me/tiny-es", "--json"], url, hf_home)
        assert pulled.returncode == 0, pulled.stderr[-2000:]
        via_hub = espzoo(["transcribe", "me/tiny-es", *map(str, audio), "--beam", "1"], url, hf_home)
    finally:
        server.stop()
    local = espzoo(["transcribe", str(finetuned["out"]), *map(str, audio), "--beam", "1"], "http://127.0.0.1:9",
                   tmp_path / "unused")
    assert via_hub.returncode == 0 and local.returncode == 0, via_hub.stderr[-2000:] + local.stderr[-2000:]
    assert via_hub.stdout.count("\n") == len(audio)
    texts = [line.split("\t", 1)[1] for line in via_hub.stdout.splitlines()]
    assert texts == [line.split("\t", 1)[1] for line in local.stdout.splitlines()]


def test_bad_data_is_one_sentence_and_nothing_is_trained(served: str, data: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(data["train"], bad)
    with (bad / "text").open("a", encoding="utf-8") as fh:
        fh.write("ghost-utt una frase sin audio\n")
    out = tmp_path / "exp"
    result = espzoo(["finetune", REPO, "--train", str(bad), "--valid", str(data["dev"]), "--out", str(out),
                     "--max-epoch", "1"], served, tmp_path / "hf")
    assert result.returncode != 0
    assert "ghost-utt" in result.stderr and "--skip-bad" in result.stderr
    assert not (out / "model.pth").exists() and not (out / "conf").exists() and not (out / "init").exists()


def test_bad_vocab_spec_is_refused_before_training(served: str, data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "exp"
    result = espzoo(["finetune", REPO, "--train", str(data["train"]), "--valid", str(data["dev"]), "--out", str(out),
                     "--vocab", "bpe:many", "--max-epoch", "1"], served, tmp_path / "hf")
    assert result.returncode != 0 and "bpe:many" in result.stderr
    assert "Traceback" not in result.stderr
    assert "checking and converting the data" not in result.stderr  # refused before any work
    assert not (out / "model.pth").exists() and not (out / "conf").exists()


def test_unknown_model_suggests_catalog_ids(served: str, data: dict[str, Path], tmp_path: Path) -> None:
    result = espzoo(["finetune", "espnet/bn_openslr35", "--train", str(data["train"]), "--valid", str(data["dev"]),
                     "--out", str(tmp_path / "exp")], served, tmp_path / "hf")
    assert result.returncode != 0 and "espnet/bn_openslr53" in result.stderr


def test_amp_without_a_gpu_is_refused_before_any_work(served: str, data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "exp"
    result = espzoo(["finetune", REPO, "--train", str(data["train"]), "--valid", str(data["dev"]), "--out", str(out),
                     "--use-amp"], served, tmp_path / "hf")
    assert result.returncode != 0 and "needs a GPU" in result.stderr
    assert not out.exists()


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_a_second_run_on_a_busy_or_unfinished_out_touches_nothing(served: str, data: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    import sys

    out = tmp_path / "exp"
    args = ["finetune", REPO, "--train", str(data["train"]), "--valid", str(data["dev"]), "--out", str(out),
            "--max-epoch", "1", "--json"]  # --json: no progress lines, the error alone on stderr
    # Another run holds OUT (here a process holding its lock, as a running `espzoo finetune` does).
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom espzoo.train.outdir import lock_out\n"
                               "with lock_out(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(120)",
                               str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"  # type: ignore[union-attr]
        (out / "data" / "train").mkdir(parents=True)
        (out / "data" / "train" / "wav.scp").write_text("the running run's data\n")
        before = _tree(out)
        busy = espzoo(args, served, tmp_path / "hf")
        assert busy.returncode == 1 and f"{out} is in use by another espzoo run (pid {holder.pid})" in busy.stderr
        assert busy.stderr.count("\n") == 1 and _tree(out) == before
    finally:
        holder.kill()
        holder.wait()
    # An unfinished training without --resume is refused before the data is rewritten.
    (out / "conf").mkdir()
    (out / "conf" / "train.yaml").write_text("max_epoch: 5\n")
    before = _tree(out)
    unfinished = espzoo(args, served, tmp_path / "hf")
    assert unfinished.returncode == 1 and "unfinished training" in unfinished.stderr
    after = _tree(out)
    before.pop(".espzoo.lock"), after.pop(".espzoo.lock")  # the lock itself notes who held it last
    assert after == before


def test_disk_full_while_preparing_data_is_one_sentence(served: str, data: dict[str, Path], tmp_path: Path) -> None:
    import resource

    hf_home = tmp_path / "hf"
    pulled = json.loads(espzoo(["pull", REPO, "--json"], served, hf_home).stdout)

    def limit_file_size() -> None:  # as `ulimit -f`: a write past 1500 bytes fails (EFBIG), like a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (1500, 1500))

    out = tmp_path / "exp"
    result = subprocess.run(
        [ESPZOO, "finetune", f"{REPO}@{pulled['commit']}", "--train", str(data["train"]), "--valid", str(data["dev"]),
         "--out", str(out), "--max-epoch", "1"],
        env=client_env(served, hf_home), capture_output=True, text=True, timeout=600, preexec_fn=limit_file_size,
    )
    assert result.returncode == 1 and "no room to write" in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in result.stderr and len(errors) == 1, result.stderr
    assert not (out / "data" / "train").exists()  # nothing half-written where a later run would look


@pytest.mark.slow
def test_disk_full_during_training_then_resume_finishes(served: str, data: dict[str, Path], tmp_path: Path) -> None:
    import resource

    hf_home = tmp_path / "hf"
    pulled = json.loads(espzoo(["pull", REPO, "--json"], served, hf_home).stdout)
    out = tmp_path / "exp"
    args = [ESPZOO, "finetune", f"{REPO}@{pulled['commit']}", "--train", str(data["train"]), "--valid",
            str(data["dev"]), "--out", str(out), "--max-epoch", "2", "--batch-bins", "200000"]

    def limit_file_size() -> None:  # room for the init checkpoint (~1.3 MB), not for ESPnet's checkpoint.pth
        resource.setrlimit(resource.RLIMIT_FSIZE, (3_000_000, 3_000_000))

    full = subprocess.run(args, env=client_env(served, hf_home), capture_output=True, text=True, timeout=900,
                          preexec_fn=limit_file_size)
    errors = [line for line in full.stderr.splitlines() if line.startswith("error:")]
    assert full.returncode == 1 and len(errors) == 1 and "ran out of disk space" in errors[0], full.stderr[-3000:]
    assert "Traceback" not in full.stderr and not (out / "model.pth").exists()
    # Space freed: --resume trains to the end.
    resumed = subprocess.run([*args, "--resume"], env=client_env(served, hf_home), capture_output=True, text=True,
                             timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (out / "model.pth").is_file() and "restarts from epoch 1" in " ".join(resumed.stderr.split())


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's signature and IHDR chunk; AssertionError for anything else."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", f"{path} is not a PNG"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_curves_are_kept_in_out_and_shown_in_the_exported_card(finetuned: dict, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = finetuned["out"]
    curves = finetuned["second"]["curves"]
    assert curves["tensorboard"] == str(out / "espnet" / "tensorboard")
    images = {Path(p).name for p in curves["images"]}
    assert {"loss.png", "acc.png"} <= images
    for name in images:  # matplotlib's default figure: 6.4 x 4.8 inches at 100 dpi
        assert _png_size(out / "espnet" / "images" / name) == (640, 480), name

    # One point per epoch, across the resume (1 epoch, then a second run to 2): ESPnet logs each epoch's
    # validation values, and train's iter_epoch, once per epoch.
    valid = EventAccumulator(str(out / "espnet" / "tensorboard" / "valid"))
    valid.Reload()
    losses = valid.Scalars("loss")
    assert len(losses) == 2 and losses[0].step < losses[1].step
    train = EventAccumulator(str(out / "espnet" / "tensorboard" / "train"))
    train.Reload()
    assert [e.value for e in train.Scalars("iter_epoch")] == [1.0, 2.0]

    dest = export(out, tmp_path / "repo", ExportOptions(repo_id="me/tiny-es"))
    card = (dest / "README.md").read_text(encoding="utf-8")
    shown = sorted(dest.glob("exp/*/images/*.png"))
    assert {p.name for p in shown} >= {"loss.png", "acc.png"}
    assert not any("time" in p.name for p in shown)  # timings stay in OUT
    for image in shown:
        assert f"]({image.relative_to(dest).as_posix()})" in card
        assert image.read_bytes() == (out / "espnet" / "images" / image.name).read_bytes()
    # The card's provenance: the pretrained repo at its commit, a data summary, the command.
    provenance = json.loads((out / "provenance.json").read_text(encoding="utf-8"))
    assert f"- pretrained model: `{REPO}` at commit `{provenance['source']['commit']}`" in card
    assert "- data `train`: 24 utterances" in card
    assert "- command: `espzoo finetune " in card
