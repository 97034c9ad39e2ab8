"""espzoo.models.bundle on the tiny real ESPnet repos: finding files, resolving paths, safe checkpoint loading."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from espzoo.errors import BundleError, UnsafeCheckpointError
from espzoo.models.bundle import load_state_dict, open_bundle


def _copy(repo: Path, dest: Path) -> Path:
    shutil.copytree(repo, dest)
    return dest


def _as_hf_cache(repo: Path, cache: Path) -> Path:
    """The repo as huggingface_hub caches it: content in blobs/<sha256>, the snapshot a tree of symlinks."""
    snapshot = cache / "snapshots" / "0123456789abcdef"
    for src in sorted(p for p in repo.rglob("*") if p.is_file()):
        data = src.read_bytes()
        blob = cache / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / src.relative_to(repo)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


def _fingerprint(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("variant", ["char", "bpe", "nometa"])
def test_opens_every_variant(variant: str, request: pytest.FixtureRequest) -> None:
    repo: Path = request.getfixturevalue(f"tiny_repo_{variant}")
    bundle = open_bundle(repo)
    assert bundle.task == "asr"
    assert bundle.sample_rate == 16000
    assert bundle.checkpoint.name == "valid.acc.ave_2best.pth"
    assert bundle.config_path.parent == bundle.checkpoint.parent
    assert bundle.stats_file is not None and bundle.stats_file.name == "feats_stats.npz"
    assert bundle.token_list[0] == "<blank>" and bundle.token_list[-1] == "<sos/eos>"
    assert bundle.token_type == ("bpe" if variant == "bpe" else "char")
    assert (bundle.bpemodel is not None) == (variant == "bpe")
    assert (bundle.meta is None) == (variant == "nometa")
    arch = bundle.architecture()
    assert arch["encoder"] == "conformer" and arch["encoder_blocks"] == 2 and arch["encoder_output_size"] == 64
    assert arch["decoder"] == "transformer" and arch["decoder_blocks"] == 1
    assert arch["ctc_weight"] == 0.3 and arch["vocab_size"] == len(bundle.token_list)


def test_without_meta_the_training_config_and_averaged_checkpoint_win(tiny_repo_nometa: Path) -> None:
    # The repo also holds conf/decode_asr.yaml and a non-averaged valid.acc.best.pth.
    bundle = open_bundle(tiny_repo_nometa)
    assert bundle.config_path.relative_to(tiny_repo_nometa).parts[0] == "exp"
    assert bundle.checkpoint.name.startswith("valid.acc.ave")
    assert bundle.stats_file == tiny_repo_nometa / "exp/asr_stats_raw_en_char_sp/train/feats_stats.npz"


@pytest.mark.parametrize("variant", ["char", "bpe"])
def test_resolved_config_points_inside_the_snapshot_and_blobs_stay_untouched(
    variant: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    snapshot = _as_hf_cache(request.getfixturevalue(f"tiny_repo_{variant}"), tmp_path / "cache")
    before = _fingerprint(tmp_path / "cache" / "blobs")

    bundle = open_bundle(snapshot)
    resolved = bundle.resolved_config()
    written = bundle.write_resolved_config(tmp_path / "out")
    state = load_state_dict(bundle.checkpoint)

    stats = Path(resolved["normalize_conf"]["stats_file"])
    assert stats.is_absolute() and stats.is_file() and stats.is_relative_to(snapshot)
    if variant == "bpe":
        assert Path(resolved["bpemodel"]).is_file() and Path(resolved["bpemodel"]).is_relative_to(snapshot)
    # The config as read keeps ESPnet's relative paths; only the copy changed.
    assert not Path(bundle.config["normalize_conf"]["stats_file"]).is_absolute()
    assert yaml.safe_load(written.read_text(encoding="utf-8")) == resolved
    assert state["ctc.ctc_lo.weight"].shape[0] == len(bundle.token_list)
    assert _fingerprint(tmp_path / "cache" / "blobs") == before
    assert all(p.is_symlink() for p in snapshot.rglob("*") if not p.is_dir())


def test_refuses_to_write_the_resolved_config_into_the_snapshot(tiny_repo_char: Path) -> None:
    bundle = open_bundle(tiny_repo_char)
    with pytest.raises(BundleError, match="inside the model snapshot"):
        bundle.write_resolved_config(tiny_repo_char / "resolved.yaml")
    assert not (tiny_repo_char / "resolved.yaml").exists()


def test_tokens_that_look_like_paths_survive_resolution(tiny_repo_char: Path, tmp_path: Path) -> None:
    repo = _copy(tiny_repo_char, tmp_path / "repo")
    config_path = next(repo.glob("exp/asr_train*/config.yaml"))
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    tricky = ["exp", ".", "data", "exp/asr_stats_raw_char/train/feats_stats.npz", "bpe.model", "tokens.txt"]
    config["token_list"] = config["token_list"][:-1] + tricky + config["token_list"][-1:]
    config_path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")

    resolved = open_bundle(repo).resolved_config()
    assert resolved["token_list"] == config["token_list"]
    assert Path(resolved["normalize_conf"]["stats_file"]).is_absolute()


def test_paths_from_another_machine_and_other_places_are_found_in_the_repo(
    tiny_repo_bpe: Path, tmp_path: Path
) -> None:
    repo = _copy(tiny_repo_bpe, tmp_path / "repo")
    config_path = next(repo.glob("exp/asr_train*/config.yaml"))
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    stats = config["normalize_conf"]["stats_file"]
    config["normalize_conf"]["stats_file"] = f"/home/someone/espnet/egs2/x/asr1/{stats}"
    config["bpemodel"] = "data/en_token_list/bpe_unigram30/bpe.model"  # the file is elsewhere in this repo
    config_path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")

    bundle = open_bundle(repo)
    assert bundle.stats_file == repo / "exp/asr_stats_raw_bpe30/train/feats_stats.npz"
    assert bundle.bpemodel == repo / "data/token_list/bpe_unigram30/bpe.model"
    assert bundle.resolved_config()["bpemodel"] == str(bundle.bpemodel)


def test_s2t_task_comes_from_meta_yaml(tiny_repo_char: Path, tmp_path: Path) -> None:
    repo = _copy(tiny_repo_char, tmp_path / "repo")
    meta = yaml.safe_load((repo / "meta.yaml").read_text())
    meta["files"] = {"s2t_model_file": meta["files"]["asr_model_file"]}
    meta["yaml_files"] = {"s2t_train_config": meta["yaml_files"]["asr_train_config"]}
    (repo / "meta.yaml").write_text(yaml.safe_dump(meta))
    assert open_bundle(repo).task == "s2t"


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("legacy", [False, True])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, legacy: bool) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "valid.acc.ave.pth"
    payload = {"encoder.weight": torch.zeros(2), "x": _RunsCode(marker)}
    if legacy:
        with evil.open("wb") as f:
            pickle.dump(payload, f, protocol=2)
    else:
        torch.save(payload, evil)
    assert not marker.exists()

    with pytest.raises(UnsafeCheckpointError, match="Refusing to load checkpoint .* could run code"):
        load_state_dict(evil)
    assert not marker.exists()


def test_old_non_zip_checkpoints_still_load(tmp_path: Path) -> None:
    path = tmp_path / "old.pth"
    torch.save({"w": torch.arange(3.0)}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(load_state_dict(path)["w"], torch.arange(3.0))


def test_truncated_checkpoint_is_a_clear_error(tiny_repo_char: Path, tmp_path: Path) -> None:
    source = open_bundle(tiny_repo_char).checkpoint
    broken = tmp_path / "broken.pth"
    broken.write_bytes(source.read_bytes()[:5000])
    with pytest.raises(BundleError, match="truncated or corrupt") as err:
        load_state_dict(broken)
    assert not isinstance(err.value, UnsafeCheckpointError)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "not an ESPnet ASR model: no ESPnet training config"),
        ({"README.md": "# hello\n", "conf/decode.yaml": "beam_size: 10\n"}, "no ESPnet training config"),
        ({"meta.yaml": "files:\n  model_file: exp/tts/train.loss.ave.pth\n"}, "not an ESPnet ASR or S2T model"),
        ({"meta.yaml": "just: text\n"}, "not an ESPnet meta.yaml"),
    ],
)
def test_folders_that_are_not_asr_models(tmp_path: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    with pytest.raises(BundleError, match=message):
        open_bundle(tmp_path)


def test_missing_folder_and_missing_pieces(tiny_repo_char: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist; pull the model first"):
        open_bundle(tmp_path / "nowhere")
    repo = _copy(tiny_repo_char, tmp_path / "repo")
    (repo / "meta.yaml").unlink()
    for pth in repo.rglob("*.pth"):
        pth.unlink()
    with pytest.raises(BundleError, match=r"no checkpoint \(\*\.pth\)"):
        open_bundle(repo)
    shutil.rmtree(tmp_path / "repo")
    repo = _copy(tiny_repo_char, tmp_path / "repo")
    next(repo.rglob("feats_stats.npz")).unlink()
    with pytest.raises(BundleError, match="uses global_mvn but has no feats_stats.npz"):
        open_bundle(repo)


def test_language_model_files_never_pass_for_the_asr_model(tiny_repo_nometa: Path, tmp_path: Path) -> None:
    repo = _copy(tiny_repo_nometa, tmp_path / "repo")
    lm = repo / "exp/lm_train_lm_transformer_en_char"
    lm.mkdir(parents=True)
    (lm / "config.yaml").write_text(yaml.safe_dump({"lm": "transformer", "token_list": ["<blank>", "a"]}))
    torch.save({"lm.weight": torch.zeros(1000, 1000)}, lm / "valid.loss.ave.pth")  # larger than the ASR one
    (repo / "exp/asr_train_conformer_tiny_raw_en_char_sp/valid.acc.ave_2best.pth").rename(repo / "model.pth")

    bundle = open_bundle(repo)
    assert bundle.config_path.parent.name.startswith("asr_train")
    assert bundle.checkpoint.parent.name.startswith("asr_train")  # the remaining valid.acc.best.pth beside it


def test_bpemodel_naming_a_tokenizer_is_not_a_path(tiny_repo_char: Path, tmp_path: Path) -> None:
    repo = _copy(tiny_repo_char, tmp_path / "repo")
    (repo / "bpe.model").write_bytes(b"unrelated")
    config_path = next(repo.glob("exp/asr_train*/config.yaml"))
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    config.update(token_type="hugging_face", bpemodel="facebook/mbart-large-50")
    config_path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")

    bundle = open_bundle(repo)
    assert bundle.bpemodel is None
    assert bundle.resolved_config()["bpemodel"] == "facebook/mbart-large-50"


def test_the_shipped_demo_model_is_a_small_complete_espnet_repo() -> None:
    import espzoo

    repo = Path(espzoo.__file__).parent / "assets/pretrained/espzoo-demo/tiny-en-char"
    bundle = open_bundle(repo)
    assert bundle.meta is not None and bundle.task == "asr" and bundle.token_type == "char"
    assert bundle.sample_rate == 16000 and bundle.stats_file is not None
    assert bundle.checkpoint.stat().st_size < 3_000_000
    state = load_state_dict(bundle.checkpoint)
    assert state["decoder.output_layer.weight"].shape == (len(bundle.token_list), 64)
    front = (repo / "README.md").read_text(encoding="utf-8").split("---")[1]
    assert yaml.safe_load(front)["language"] == "en"


def test_opens_a_hub_snapshot_object(tiny_repo_char: Path) -> None:
    from espzoo.hub.session import Snapshot

    snapshot = Snapshot(repo_id="espzoo-test/tiny-char", commit="0" * 40, path=tiny_repo_char, files=[])
    assert open_bundle(snapshot).root == tiny_repo_char


@pytest.mark.parametrize(
    ("value", "rate"), [(16000, 16000), ("16k", 16000), ("22.05k", 22050), ("8000", 8000), ("fast", None), (None, None)]
)
def test_sample_rates_as_espnet_configs_write_them(value: object, rate: int | None) -> None:
    from espzoo.repo import parse_sample_rate as parse_rate

    assert parse_rate(value) == rate


def test_config_sample_rate_reads_both_spellings_and_defaults_to_16k() -> None:
    from espzoo.repo import config_sample_rate

    assert config_sample_rate({"frontend_conf": {"fs": "8k"}}) == 8000
    assert config_sample_rate({"preprocessor_conf": {"fs": 22050}}) == 22050
    assert config_sample_rate({}) == 16000
    assert config_sample_rate({}, default=None) is None


def test_experiment_config_paths_resolve_but_tokens_do_not(tmp_path: Path) -> None:
    from espzoo.models.bundle import resolve_config_paths

    (tmp_path / "bpe.model").write_bytes(b"x")
    (tmp_path / "exp").mkdir()  # a folder named like a token must not turn the token into a path
    config = {"bpemodel": "bpe.model", "token_list": ["<blank>", "exp", ".", "<sos/eos>"],
              "normalize_conf": {"stats_file": "missing.npz"}}
    resolved = resolve_config_paths(config, tmp_path)
    assert resolved["bpemodel"] == str((tmp_path / "bpe.model").resolve())
    assert resolved["token_list"] == ["<blank>", "exp", ".", "<sos/eos>"]
    assert resolved["normalize_conf"]["stats_file"] == "missing.npz"  # not there: left as written
    assert config["bpemodel"] == "bpe.model"  # the input is not modified


@pytest.mark.parametrize("content", [b"", b"\x80", b"not a checkpoint at all", bytes(range(256)) * 4])
def test_garbage_checkpoint_is_one_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(BundleError, match="not a readable PyTorch file|holds no state dict"):
        load_state_dict(path)


def test_load_state_dict_says_whether_it_memory_mapped(tmp_path: Path) -> None:
    from espzoo.models.bundle import load_state_dict_mapped

    state = {"w": torch.arange(4.0)}
    torch.save(state, tmp_path / "zip.pth")
    torch.save(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    zipped, mapped = load_state_dict_mapped(tmp_path / "zip.pth")
    legacy, legacy_mapped = load_state_dict_mapped(tmp_path / "legacy.pth")
    # The old format is a zip-less pickle torch cannot map: transfer must not madvise its (ordinary) memory.
    assert mapped and not legacy_mapped
    assert torch.equal(zipped["w"], legacy["w"])


def test_a_token_list_with_duplicates_is_refused_at_open(tiny_repo_char: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(tiny_repo_char, repo)
    config_path = next(p for p in repo.rglob("config.yaml") if "asr_stats" not in str(p))
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    config["token_list"] = [*config["token_list"][:-1], config["token_list"][3], config["token_list"][-1]]
    config_path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    with pytest.raises(BundleError, match=r"repeats .*; each token must appear once"):
        open_bundle(repo)
