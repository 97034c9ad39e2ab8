"""Export: the ESPnet Hub layout, loadable by ESPnet's Speech2Text from its own files, same transcripts."""

from __future__ import annotations

import os
import shutil
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from _tiny_out import audio_files, build_tiny_out, small_data_dir

from espzoo.decode.recognizer import DecodeOptions, load_recognizer
from espzoo.decode.report import evaluate
from espzoo.errors import ExportError
from espzoo.models.bundle import open_bundle
from espzoo.publish.hub_layout import MODEL_FILE, ExportOptions, export

BEAM = 2  # small beams keep these CPU decodes short; every decode here uses the same one


@pytest.fixture(scope="module")
def evaluated_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], list[str]]:
    """A tiny char OUT with an evaluation in OUT/eval/test, its audio files and their transcripts."""
    root = tmp_path_factory.mktemp("export")
    out = build_tiny_out(root / "out")
    data = small_data_dir(root / "test", count=1)
    report = evaluate(out, data, options=DecodeOptions(beam_size=BEAM))
    return out, audio_files(data), [r.hypothesis for r in report.rows]


def _front_matter(readme: str) -> dict:
    assert readme.startswith("---\n")
    return yaml.safe_load(readme.split("---\n")[1])


def _speech2text_in(folder: Path, monkeypatch: pytest.MonkeyPatch):
    """ESPnet's Speech2Text built the way the model card says: from the repo folder, by meta.yaml's paths."""
    from espnet2.bin.asr_inference import Speech2Text

    meta = yaml.safe_load((folder / "meta.yaml").read_text())
    monkeypatch.chdir(folder)
    return Speech2Text(
        asr_train_config=meta["yaml_files"]["asr_train_config"],
        asr_model_file=meta["files"]["asr_model_file"],
        beam_size=BEAM,
        ctc_weight=0.3,  # the tiny model's model_conf.ctc_weight, which espzoo's recognizer uses
        nbest=1,
    )


def test_export_layout_and_card(evaluated_out, tmp_path: Path) -> None:
    out, _, _ = evaluated_out
    dest = export(out, tmp_path / "repo", ExportOptions(repo_id="me/tiny_en", datasets=["espeak_en"]))
    meta = yaml.safe_load((dest / "meta.yaml").read_text())
    assert (dest / meta["files"]["asr_model_file"]).is_file()
    assert meta["files"]["asr_model_file"].endswith(MODEL_FILE)
    assert meta["espnet"] == metadata.version("espnet") and meta["torch"] and meta["python"] and meta["timestamp"] > 0
    config_path = dest / meta["yaml_files"]["asr_train_config"]
    config = yaml.safe_load(config_path.read_text())
    assert (dest / config["normalize_conf"]["stats_file"]).is_file()
    assert config["normalize_conf"]["stats_file"].endswith("train/feats_stats.npz")
    assert (dest / "data" / "token_list" / "char" / "tokens.txt").read_text().split() == config["token_list"]
    assert str(tmp_path.parent) not in config_path.read_text()  # no path of this machine leaks out
    assert (config_path.parent / "espzoo" / "provenance.json").is_file()
    bundle = open_bundle(dest)  # what espzoo pull + evaluate/plan/finetune will see
    assert bundle.task == "asr" and bundle.checkpoint == dest / meta["files"]["asr_model_file"]
    assert bundle.token_list == config["token_list"]
    assert bundle.stats_file == dest / config["normalize_conf"]["stats_file"]
    assert bundle.sample_rate == 16000

    readme = (dest / "README.md").read_text()
    front = _front_matter(readme)
    assert front["tags"] == ["espnet", "audio", "automatic-speech-recognition"]
    assert front["language"] == "en" and front["datasets"] == ["espeak_en"] and front["license"]
    result = yaml.safe_load((out / "eval" / "test" / "result.json").read_text())
    assert f"| test | 1 | {100 * result['wer']:.1f} | {100 * result['cer']:.1f} |" in readme
    assert "espzoo transcribe me/tiny_en" in readme and "Speech2Text(" in readme
    assert "espzoo-test/tiny_char" in readme  # where it was fine-tuned from


def test_exported_files_alone_give_the_same_transcripts(evaluated_out, tmp_path: Path, monkeypatch) -> None:
    out, audio, before = evaluated_out
    dest = export(out, tmp_path / "repo")
    # Nothing of OUT may be needed: move it away while ESPnet loads the export.
    hidden = out.with_name("out.hidden")
    out.rename(hidden)
    try:
        speech2text = _speech2text_in(dest, monkeypatch)
        import soundfile

        after = [speech2text(soundfile.read(a, dtype="float32")[0])[0][0] for a in audio]
    finally:
        hidden.rename(out)
    assert after == before
    assert any(before)  # the comparison is between real transcripts


def test_bpe_model_exports_with_its_sentencepiece_model(tmp_path: Path, monkeypatch) -> None:
    out = build_tiny_out(tmp_path / "bpe_out", token_type="bpe")
    audio = audio_files(small_data_dir(tmp_path / "d", count=1))
    import soundfile

    wave = soundfile.read(audio[0], dtype="float32")[0]
    before = load_recognizer(out, DecodeOptions(beam_size=BEAM))(wave)
    dest = export(out, tmp_path / "repo")
    config = yaml.safe_load((dest / yaml.safe_load((dest / "meta.yaml").read_text())["yaml_files"]
                             ["asr_train_config"]).read_text())
    assert config["bpemodel"] == "data/token_list/bpe_unigram40/bpe.model"
    assert (dest / config["bpemodel"]).read_bytes() == (out / "bpe.model").read_bytes()
    assert open_bundle(dest).bpemodel == dest / config["bpemodel"]
    shutil.rmtree(out)
    speech2text = _speech2text_in(dest, monkeypatch)
    text = speech2text(wave)[0][0]
    assert text == before and "▁" not in text  # detokenized by sentencepiece, as before export


def test_export_refuses_to_overwrite_and_leaves_nothing_half_written(evaluated_out, tmp_path: Path) -> None:
    out, _, _ = evaluated_out
    dest = tmp_path / "repo"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export(out, dest)
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]
    export(out, dest, ExportOptions(overwrite=True))
    assert not (dest / "keep.txt").exists() and (dest / "meta.yaml").is_file()

    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "model.pth").unlink()
    with pytest.raises(ExportError, match="no model.pth"):
        export(broken, tmp_path / "never")
    assert not (tmp_path / "never").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "repo"]  # no temp folders left


def test_export_is_pullable_through_the_mirror_and_transcribes_alike(evaluated_out, tmp_path: Path) -> None:
    """export -> `espzoo mirror serve --root` -> `espzoo pull` -> `espzoo transcribe REPO`: same text as OUT."""
    import json
    import subprocess

    from _hubtools import ESPZOO, client_env

    out, audio, before = evaluated_out
    root = tmp_path / "mirror"
    export(out, root / "espzoo-test" / "exported", ExportOptions(repo_id="espzoo-test/exported"))
    server = subprocess.Popen(
        [ESPZOO, "mirror", "serve", "--root", str(root), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=client_env("http://127.0.0.1:9", tmp_path),
    )
    try:
        url = server.stdout.readline().strip()  # type: ignore[union-attr]
        assert url.startswith("http://127.0.0.1:")
        env = client_env(url, tmp_path / "hf")
        pulled = subprocess.run(
            [ESPZOO, "pull", "espzoo-test/exported", "--json"], env=env, capture_output=True, text=True, timeout=120
        )
        assert pulled.returncode == 0, pulled.stderr
        snapshot = json.loads(pulled.stdout)
        assert {"meta.yaml", "README.md"} <= set(snapshot["files"])
        assert any(f.endswith(MODEL_FILE) for f in snapshot["files"])
        said = subprocess.run(
            [ESPZOO, "transcribe", "espzoo-test/exported", *map(str, audio), "--beam", str(BEAM)],
            env=env, capture_output=True, text=True, timeout=300,
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert said.returncode == 0, said.stderr
    assert said.stdout.splitlines() == [f"{a}\t{t}" for a, t in zip(audio, before, strict=True)]


def test_cli_export(evaluated_out, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from espzoo.cli.main import app

    out, _, _ = evaluated_out
    runner = CliRunner()
    done = runner.invoke(app, ["export", str(out), "--out", str(tmp_path / "repo"), "--language", "en", "--json"])
    assert done.exit_code == 0, done.output
    listed = json.loads(done.stdout)
    assert "meta.yaml" in listed["files"] and Path(listed["path"]) == tmp_path / "repo"
    again = runner.invoke(app, ["export", str(out), "--out", str(tmp_path / "repo")])
    assert again.exit_code == 1 and "not empty" in again.stderr and "--overwrite" in again.stderr
    missing = runner.invoke(app, ["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")])
    assert missing.exit_code == 1 and "is not a folder" in missing.stderr


def test_export_holds_no_secret_and_no_local_path(evaluated_out, tmp_path: Path) -> None:
    import json

    out, _, _ = evaluated_out
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    token = "hf_" + "Ab1" * 10
    provenance = json.loads((copy / "provenance.json").read_text())
    provenance["command"] = ["espzoo", "finetune", "espzoo-test/tiny_char", "--train", "/home/alice/corpus/train",
                             "--out", str(copy), "--conf", f"hf_token={token}", "--hub-token", token,
                             "--conf", "wandb_api_key=s3cr3t", "--vocab", "bpe:50"]
    provenance["init_checkpoint"] = [{"path": str(copy / "init" / "init.pth"), "sha256": "0" * 64}]
    (copy / "provenance.json").write_text(json.dumps(provenance))
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["wandb_token"] = "s3cr3t"
    config["frontend_conf"] = {**(config.get("frontend_conf") or {}), "cache_dir": "/home/alice/.cache/x"}
    (copy / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    dest = export(copy, tmp_path / "repo")
    everything = "\n".join(p.read_text(errors="replace") for p in dest.rglob("*") if p.suffix in (".md", ".yaml",
                                                                                                  ".json", ".txt"))
    for leaked in (token, "s3cr3t", "/home/alice", str(copy), str(tmp_path)):
        assert leaked not in everything, leaked
    readme = (dest / "README.md").read_text()
    assert "--vocab bpe:50" in readme and "hf_token=<redacted>" in readme and "--train train" in readme
    exported = json.loads(next(dest.rglob("provenance.json")).read_text())
    assert exported["init_checkpoint"][0]["path"] == "init/init.pth"  # relative to the experiment dir


def test_exported_and_written_files_get_the_users_umask(evaluated_out, tmp_path: Path) -> None:
    from espzoo.utils.fs import write_text

    out, _, _ = evaluated_out
    previous = os.umask(0o022)
    try:
        dest = export(out, tmp_path / "repo")
        written = write_text(tmp_path / "x" / "file.txt", "hello\n")
    finally:
        os.umask(previous)
    assert dest.stat().st_mode & 0o777 == 0o755
    assert written.stat().st_mode & 0o777 == 0o644
    assert all(p.stat().st_mode & 0o777 in (0o644, 0o755) for p in dest.rglob("*")), [
        (str(p), oct(p.stat().st_mode)) for p in dest.rglob("*") if p.stat().st_mode & 0o777 not in (0o644, 0o755)]
