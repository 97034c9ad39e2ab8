"""Hugging Face datasets as training and test data (espzoo.data.hfdata through espzoo.data.convert.prepare).

The datasets are built here from the committed Spanish speech (zoo/assets/speech/es): parquet files written with
pyarrow (several files, several row groups), a folder written by the `datasets` library's own save_to_disk, and a
dataset repo served by espzoo's mirror on 127.0.0.1 and pulled with the real huggingface_hub client.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from _hubtools import ESPZOO, PYTHON, client_env, run_client, sha256_of
from _paths import SPEECH_ROOT

from espzoo.data.convert import prepare
from espzoo.data.hfdata import parse_spec, select_split
from espzoo.errors import DataError
from espzoo.hub import session as hub_session
from espzoo.serve.add import add_from_cache
from espzoo.serve.server import MirrorServer

SPEECH = SPEECH_ROOT / "es"
REPO = "espzoo-test/tiny-char"
DATASET = "espzoo-test/es-speech"
CARD = """---
language: es
task_categories:
- automatic-speech-recognition
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*.parquet
  - split: validation
    path: data/validation-*.parquet
  - split: test
    path: data/test-*.parquet
---

Spanish test speech for espzoo.
"""


def kaldi_subset(split: str, dest: Path, n: int) -> Path:
    """The first n utterances of a committed Kaldi dir, audio paths made absolute."""
    dest.mkdir(parents=True)
    source = SPEECH / split
    ids = [line.split(maxsplit=1)[0] for line in (source / "text").read_text(encoding="utf-8").splitlines()[:n]]
    for name in ("text", "wav.scp", "utt2spk"):
        rows = dict(line.split(maxsplit=1) for line in (source / name).read_text(encoding="utf-8").splitlines())
        values = [str((source / rows[u]).resolve()) if name == "wav.scp" else rows[u] for u in ids]
        (dest / name).write_text("".join(f"{u} {v}\n" for u, v in zip(ids, values, strict=True)), encoding="utf-8")
    return dest


def rows_of(kaldi: Path) -> list[dict]:
    """A Kaldi dir as Hugging Face rows: the Audio feature's {bytes, path}, the transcript, the speaker."""
    def table(name: str) -> dict[str, str]:
        return dict(line.split(maxsplit=1) for line in (kaldi / name).read_text(encoding="utf-8").splitlines())

    wavs, texts, speakers = table("wav.scp"), table("text"), table("utt2spk")
    return [{"audio": {"bytes": Path(wavs[u]).read_bytes(), "path": Path(wavs[u]).name}, "sentence": texts[u],
             "client_id": speakers[u]} for u in sorted(wavs)]


def write_parquet(rows: list[dict], folder: Path, stem: str = "train", *, files: int = 2, row_group: int = 3) -> Path:
    """`rows` as `files` parquet files of `row_group` rows per group, named as the Hub names a split's shards."""
    folder.mkdir(parents=True, exist_ok=True)
    per_file = -(-len(rows) // files)
    for i in range(files):
        part = rows[i * per_file:(i + 1) * per_file]
        pq.write_table(pa.Table.from_pylist(part), folder / f"{stem}-{i:05d}-of-{files:05d}.parquet",
                       row_group_size=row_group)
    return folder


def kaldi_files(directory: Path) -> dict[str, str]:
    """What ESPnet reads of a prepared dir, except where the audio lies."""
    wav_ids = [line.split()[0] for line in (directory / "wav.scp").read_text().splitlines()]
    return {"ids": " ".join(wav_ids), **{name: (directory / name).read_text(encoding="utf-8")
                                        for name in ("text", "utt2spk", "speech_shape")}}


@pytest.fixture(scope="module")
def kaldi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("kaldi")
    return {"train": kaldi_subset("train", root / "train", 12), "dev": kaldi_subset("dev", root / "dev", 4),
            "test": kaldi_subset("test", root / "test", 3)}


# ---------------------------------------------------------------------------------------------------------
# Local parquet and save_to_disk folders


def test_parquet_gives_the_same_prepared_dir_as_the_kaldi_dir(kaldi: dict[str, Path], tmp_path: Path) -> None:
    folder = write_parquet(rows_of(kaldi["train"]), tmp_path / "pq")
    assert pq.ParquetFile(folder / "train-00000-of-00002.parquet").metadata.num_row_groups == 2
    expected = kaldi_files(prepare(kaldi["train"], tmp_path / "k" / "train", sample_rate=16000).dir)
    assert len(expected["ids"].split()) == 12
    for n, source in enumerate([folder, f"{folder}/train-*", folder / "train-00000-of-00002.parquet"]):
        dataset = prepare(source, tmp_path / f"p{n}" / "train", sample_rate=16000)
        got = kaldi_files(dataset.dir)
        if n < 2:
            assert got == expected
        else:  # one of the two files: its rows only, the same way
            assert got["ids"].split() == expected["ids"].split()[:6]
            assert got["text"] == "".join(expected["text"].splitlines(keepends=True)[:6])
        # The embedded FLAC at the model's rate is used as written into the cache (no conversion).
        assert dataset.converted == 0
        for line in (dataset.dir / "wav.scp").read_text().splitlines():
            assert Path(line.split()[1]).parent.parent == tmp_path / f"p{n}" / "audio" / "hf"


def test_audio_at_another_rate_is_resampled_once(kaldi: dict[str, Path], tmp_path: Path) -> None:
    import soxr

    rows = rows_of(kaldi["dev"])
    for row in rows:  # 48 kHz WAV bytes, as Common Voice's MP3s decode
        audio, rate = sf.read(io.BytesIO(row["audio"]["bytes"]), dtype="float32")
        buffer = io.BytesIO()
        sf.write(buffer, soxr.resample(audio, rate, 48000), 48000, format="WAV")
        row["audio"] = {"bytes": buffer.getvalue(), "path": None}  # no path: named by the bytes' RIFF header
    folder = write_parquet(rows, tmp_path / "pq", files=1)
    first = prepare(folder, tmp_path / "out" / "dev", sample_rate=16000)
    again = prepare(folder, tmp_path / "out" / "dev", sample_rate=16000)
    assert (first.converted, again.converted, again.cached) == (4, 0, 4)
    # Without file names the rows are the ids; the lengths are the 16 kHz originals' to the sample.
    assert first.transcripts().keys() == {"row0000001", "row0000002", "row0000003", "row0000004"}
    lengths = [line.split()[1] for line in (first.dir / "speech_shape").read_text().splitlines()]
    original = prepare(kaldi["dev"], tmp_path / "k" / "dev", sample_rate=16000)
    assert lengths == [line.split()[1] for line in (original.dir / "speech_shape").read_text().splitlines()]
    assert sorted(p.suffix for p in (tmp_path / "out" / "audio" / "hf").rglob("*.*")) == [".wav"] * 4


def test_a_save_to_disk_folder_is_read_with_pyarrow(kaldi: dict[str, Path], tmp_path: Path) -> None:
    import datasets  # only to write the folder as users do; espzoo reads its arrow files with pyarrow

    rows = rows_of(kaldi["dev"])
    split = datasets.Dataset.from_list(rows).cast_column("audio", datasets.Audio())
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(tmp_path / "saved"))
    got = prepare(tmp_path / "saved" / "test", tmp_path / "out" / "test", sample_rate=16000)
    expected = prepare(kaldi["dev"], tmp_path / "k" / "test", sample_rate=16000)
    assert kaldi_files(got.dir) == kaldi_files(expected.dir)
    with pytest.raises(DataError, match=r"saved DatasetDict with the splits train, test; give one split's folder"):
        prepare(tmp_path / "saved", tmp_path / "out" / "x", sample_rate=16000)


def test_columns_are_found_or_named(kaldi: dict[str, Path], tmp_path: Path) -> None:
    rows = [{"speech": r["audio"], "words": r["sentence"], "id": f"u{i}"} for i, r in enumerate(rows_of(kaldi["dev"]))]
    folder = write_parquet(rows, tmp_path / "pq", files=1)
    with pytest.raises(DataError) as caught:
        prepare(folder, tmp_path / "o1" / "dev", sample_rate=16000)
    message = str(caught.value)
    assert "has no transcript column named sentence/text/transcription/normalized_text (its columns: speech, words, " \
           "id); pass --text-column NAME" in message and message.count(". ") == 0
    # The renamed Audio feature (a struct holding the files' bytes) is found by its type; the id column is used.
    dataset = prepare(folder, tmp_path / "o2" / "dev", sample_rate=16000, text_column="words")
    assert sorted(dataset.transcripts()) == ["u0", "u1", "u2", "u3"]
    with pytest.raises(DataError, match=r"has no column 'sentence' \(its columns: speech, words, id\); pass "
                                        r"--text-column with one of them"):
        prepare(folder, tmp_path / "o3" / "dev", sample_rate=16000, text_column="sentence")
    with pytest.raises(DataError, match=r"nothing/\*.parquet holds no .parquet or .arrow files; give a folder or glob"):
        prepare(f"{tmp_path}/nothing/*.parquet", tmp_path / "o4" / "dev", sample_rate=16000)


def test_bad_rows_are_checked_like_any_data(kaldi: dict[str, Path], tmp_path: Path) -> None:
    rows = rows_of(kaldi["train"])[:6]
    rows[1]["audio"] = {"bytes": b"RIFF not really a wav file" * 10, "path": "broken.wav"}
    rows[3]["sentence"] = "  "
    rows[4]["audio"] = None
    folder = write_parquet(rows, tmp_path / "pq", files=1)
    with pytest.raises(DataError) as caught:
        prepare(folder, tmp_path / "out" / "train", sample_rate=16000)
    wheres = sorted(p.where for p in caught.value.problems)
    assert wheres == ["train-00000-of-00001.parquet row 2", "train-00000-of-00001.parquet row 4",
                      "train-00000-of-00001.parquet row 5"]
    assert not (tmp_path / "out" / "train").exists()
    kept = prepare(folder, tmp_path / "out" / "train", sample_rate=16000, skip_bad=True)
    assert (kept.num_utterances, kept.dropped) == (3, 3)
    assert "unreadable audio" in (kept.dir / "skipped.txt").read_text()


def test_a_vocabulary_from_any_dataset_form(kaldi: dict[str, Path], tmp_path: Path) -> None:
    """`--vocab char:TEXT` / `bpe:N:TEXT` with TEXT a dataset as --train takes it: the same tokens as from the Kaldi
    dir it was made from (parquet folder, glob, file, save_to_disk folder); its transcript column found as for
    --train (the usual names, else `text_column`); a text-only split needs no audio column."""
    import datasets

    from espzoo.errors import VocabularyError
    from espzoo.transfer.vocab import build_vocabulary, read_texts

    rows = rows_of(kaldi["train"])
    rows[2]["sentence"] = "  " + rows[2]["sentence"].replace(" ", "   ") + " "  # spacing, as a Kaldi line reads it
    folder = write_parquet(rows, tmp_path / "pq")
    datasets.Dataset.from_list(rows).cast_column("audio", datasets.Audio()).save_to_disk(str(tmp_path / "saved"))
    lines = read_texts(kaldi["train"])
    assert len(lines) == 12 and any(not t.isascii() for t in lines)  # ñ, á, ...: a char vocabulary worth checking
    expected = build_vocabulary(f"char:{kaldi['train']}").tokens
    for source in (folder, f"{folder}/train-*", tmp_path / "saved"):
        assert read_texts(source) == lines
        assert build_vocabulary(f"char:{source}").tokens == expected
    assert build_vocabulary(f"bpe:40:{folder}", workdir=tmp_path / "b1").tokens == \
        build_vocabulary(f"bpe:40:{kaldi['train']}", workdir=tmp_path / "b2").tokens
    first = read_texts(folder / "train-00000-of-00002.parquet")
    assert first == lines[:6]

    words = write_parquet([{"words": r["sentence"], "speaker": r["client_id"]} for r in rows], tmp_path / "text_only",
                          files=1)
    assert build_vocabulary(f"char:{words}", text_column="words").tokens == expected
    with pytest.raises(DataError) as caught:
        build_vocabulary(f"char:{words}")
    assert "has no transcript column named sentence/text/transcription/normalized_text (its columns: words, " \
           "speaker); pass --text-column NAME" in str(caught.value)
    empty = write_parquet([{"sentence": " "}], tmp_path / "empty", files=1)
    with pytest.raises(VocabularyError, match="has no transcripts"):
        build_vocabulary(f"char:{empty}")


def test_s2t_extend_learns_from_a_dataset_as_from_its_kaldi_dir(tiny_s2t: Path, kaldi: dict[str, Path],
                                                               tmp_path: Path) -> None:
    """OWSM's `--vocab extend:N:TEXT` reads TEXT by the same rule: a dataset's transcript column (named here)."""
    from espzoo.transfer.plan import TransferOptions, plan_transfer

    words = write_parquet([{"words": r["sentence"]} for r in rows_of(kaldi["train"])], tmp_path / "pq", files=1)
    from_kaldi = plan_transfer(str(tiny_s2t), TransferOptions(vocab=f"extend:6:{kaldi['train']}"),
                               workdir=tmp_path / "a")
    from_data = plan_transfer(str(tiny_s2t), TransferOptions(vocab=f"extend:6:{words}"), workdir=tmp_path / "b",
                              text_column="words")
    extension = from_data.to_json()["summary"]["language"]["extension"]
    assert extension["pieces"] and extension == from_kaldi.to_json()["summary"]["language"]["extension"]
    assert from_data.vocabulary.tokens == from_kaldi.vocabulary.tokens


# ---------------------------------------------------------------------------------------------------------
# hf:ORG/NAME[:CONFIG][@REV]:SPLIT


def test_the_spec_and_which_files_a_split_is() -> None:
    spec = parse_spec("hf:google/fleurs:bn_in@refs/convert/parquet:train")
    assert (spec.repo_id, spec.config, spec.revision, spec.split) == ("google/fleurs", "bn_in", "refs/convert/parquet",
                                                                      "train")
    assert str(spec) == "hf:google/fleurs:bn_in@refs/convert/parquet:train"
    assert parse_spec("hf:a/b:test").config is None
    for bad in ("hf:fleurs:train", "hf:a/b", "hf:a/b:c:d:e", "hf:a/b@:train"):
        with pytest.raises(DataError, match="hf:ORG/NAME"):
            parse_spec(bad)

    def read(_: str) -> str | None:
        return None

    layout = ["README.md", "data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet",
              "data/test-00000-of-00001.parquet", "data/pretrain-00000.parquet"]
    assert select_split(parse_spec("hf:a/b:train"), layout, read) == ["README.md", *layout[1:3]]
    converted = ["bn_in/train/0000.parquet", "bn_in/test/0000.parquet", "en_us/train/0000.parquet"]
    assert select_split(parse_spec("hf:a/b:bn_in:train"), converted, read) == ["bn_in/train/0000.parquet"]
    with pytest.raises(DataError, match=r"no config 'xx' \(its folders: bn_in, en_us\)"):
        select_split(parse_spec("hf:a/b:xx:train"), converted, read)
    with pytest.raises(DataError, match=r"no parquet or arrow files for the split 'dev' \(its splits: pretrain, "
                                        r"test, train\)"):
        select_split(parse_spec("hf:a/b:dev"), layout, read)

    card = "---\nconfigs:\n- config_name: clean\n  data_files:\n  - split: dev\n    path: x/*.parquet\n" \
           "- config_name: other\n  data_files: y/*.parquet\n---\n"
    files = ["README.md", "x/a.parquet", "y/b.parquet"]
    assert select_split(parse_spec("hf:a/b:clean:dev"), files, lambda _: card) == ["README.md", "x/a.parquet"]
    assert select_split(parse_spec("hf:a/b:other:train"), files, lambda _: card) == ["README.md", "y/b.parquet"]
    with pytest.raises(DataError, match=r"several configs \(clean, other\); name one, e.g. hf:a/b:clean:dev"):
        select_split(parse_spec("hf:a/b:dev"), files, lambda _: card)


@pytest.fixture(scope="module")
def served(kaldi: dict[str, Path], tiny_repo_char: Path, tmp_path_factory: pytest.TempPathFactory):
    """A mirror holding the tiny model and the dataset repo DATASET (card + parquet splits)."""
    root = tmp_path_factory.mktemp("mirror")
    shutil.copytree(tiny_repo_char, root / REPO)
    repo = root / "datasets" / DATASET
    for split, source in (("train", "train"), ("validation", "dev"), ("test", "test")):
        write_parquet(rows_of(kaldi[source]), repo / "data", split, files=2 if split == "train" else 1)
    (repo / "README.md").write_text(CARD, encoding="utf-8")
    server = MirrorServer(root)
    yield {"url": server.start(), "root": root, "repo": repo, "server": server}
    server.stop()


def test_the_mirror_serves_dataset_repos_to_the_real_client(served: dict, tmp_path: Path) -> None:
    got = run_client(f"""
        from huggingface_hub import HfApi, snapshot_download
        api = HfApi()
        info = api.dataset_info("{DATASET}")
        tree = sorted(f.path for f in api.list_repo_tree("{DATASET}", repo_type="dataset", recursive=True)
                      if type(f).__name__ == "RepoFile")
        path = snapshot_download("{DATASET}", repo_type="dataset")
        result = {{"sha": info.sha, "siblings": sorted(s.rfilename for s in info.siblings), "tree": tree,
                   "path": path, "models": [m.id for m in api.list_models()],
                   "datasets": [d.id for d in api.list_datasets()]}}
    """, served["url"], tmp_path / "hf")
    files = sorted(p.relative_to(served["repo"]).as_posix() for p in served["repo"].rglob("*") if p.is_file())
    assert got["siblings"] == got["tree"] == files and len(got["sha"]) == 40
    assert got["models"] == [REPO] and got["datasets"] == [DATASET]  # ROOT/datasets is not a model org
    for rel in files:  # LFS (parquet) and plain (README) files alike
        assert sha256_of(Path(got["path"]) / rel) == sha256_of(served["repo"] / rel)
    assert Path(got["path"]).parts[-3] == "datasets--espzoo-test--es-speech"
    # What was pulled is served again from the cache (`espzoo mirror serve --from-cache`).
    with MirrorServer(from_cache=True, cache_dir=tmp_path / "hf" / "hub") as again:
        back = run_client(f"""
            from huggingface_hub import HfApi
            result = [f.path for f in HfApi().list_repo_tree("{DATASET}", repo_type="dataset", recursive=True)
                      if type(f).__name__ == "RepoFile"]
        """, again.url, tmp_path / "hf2")
    assert sorted(back) == files
    # ... and copied from the cache into another mirror folder (`espzoo mirror add --repo-type dataset`).
    added = add_from_cache(DATASET, None, tmp_path / "copy", cache_dir=tmp_path / "hf" / "hub", repo_type="dataset")
    assert added.path == tmp_path / "copy" / "datasets" / DATASET and sorted(added.files) == files
    assert all(sha256_of(added.path / rel) == sha256_of(served["repo"] / rel) for rel in files)


def test_a_config_folder_at_a_tag(served: dict, kaldi: dict[str, Path], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The layout of the Hub's parquet conversion (CONFIG/SPLIT/NNNN.parquet, no card), on a tag of the repo."""
    tagged = served["root"] / "datasets" / f"{DATASET}@v1"
    write_parquet(rows_of(kaldi["test"]), tagged / "es" / "test", "0000", files=1)
    write_parquet(rows_of(kaldi["dev"]), tagged / "en" / "test", "0000", files=1)
    for key, value in client_env(served["url"], tmp_path / "hf").items():
        monkeypatch.setenv(key, value)
    got = prepare(f"hf:{DATASET}:es@v1:test", tmp_path / "out" / "test", sample_rate=16000)
    assert kaldi_files(got.dir) == kaldi_files(prepare(kaldi["test"], tmp_path / "k" / "test", sample_rate=16000).dir)
    snapshot = next((tmp_path / "hf" / "hub" / "datasets--espzoo-test--es-speech" / "snapshots").iterdir())
    assert sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*.parquet")) == [
        "es/test/0000-00000-of-00001.parquet"]  # only the split asked for is downloaded
    with pytest.raises(DataError, match=r"no config 'fr' \(its folders: en, es\); name one of them"):
        prepare(f"hf:{DATASET}:fr@v1:test", tmp_path / "out" / "x", sample_rate=16000)


def test_a_hub_dataset_comes_in_parallel_ranges_and_a_killed_pull_resumes(served: dict, kaldi: dict[str, Path],
                                                                          tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A split's large files are fetched as parallel byte ranges (espzoo.hub.fetch, as a model's checkpoint is), into
    the blobs huggingface_hub would write; a partial file a killed pull left is finished from where it stopped."""
    from espzoo.data.hfdata import open_table
    from espzoo.hub import fetch
    from espzoo.transfer.vocab import read_texts

    for key, value in client_env(served["url"], tmp_path / "hf").items():
        monkeypatch.setenv(key, value)
    shards = sorted((served["repo"] / "data").glob("train-*.parquet"))
    monkeypatch.setattr(hub_session, "PARALLEL_MIN", min(f.stat().st_size for f in shards))
    server: MirrorServer = served["server"]
    server.reset()

    def gets(digest: str) -> list[dict]:
        return [e for e in server.stats.log if e["method"] == "GET" and e["path"] == f"/lfs/{digest}"]

    table = open_table(f"hf:{DATASET}:train")
    assert list(table.transcripts()) == read_texts(kaldi["train"])
    blobs = tmp_path / "hf" / "hub" / "datasets--espzoo-test--es-speech" / "blobs"
    for shard in shards:
        digest, size = sha256_of(shard), shard.stat().st_size
        assert sorted(e["range"] for e in gets(digest)) == sorted(
            f"bytes={p.start}-{p.end - 1}" for p in fetch.split(size, fetch.PARTS))  # one ranged GET per part
        assert sha256_of(blobs / digest) == digest
    assert not [p.name for p in blobs.iterdir() if "incomplete" in p.name or p.name.endswith(".parts")]

    # As huggingface_hub leaves a download a killed process was writing: blobs/<sha256>.<random>.incomplete.
    shard = shards[0]
    digest, data = sha256_of(shard), shard.read_bytes()
    link = next(p for p in table.files if p.name == shard.name)
    link.unlink()
    (blobs / digest).unlink()
    (blobs / f"{digest}.5f3a9c1e.incomplete").write_bytes(data[: len(data) // 2])
    server.reset()
    notes: list[str] = []
    again = open_table(f"hf:{DATASET}:train", notify=notes.append)
    assert any(n.startswith("resumed 1 download") for n in notes), notes
    assert list(again.transcripts()) == read_texts(kaldi["train"]) and sha256_of(blobs / digest) == digest
    (resumed,) = gets(digest)
    assert resumed["range"] == f"bytes={len(data) // 2}-"  # only the missing half
    assert not list(blobs.glob("*.incomplete"))


def espzoo(args: list[str], served: dict, hf_home: Path, timeout: float = 900, **env: str):
    return subprocess.run([ESPZOO, *args], env=client_env(served["url"], hf_home, **env), capture_output=True,
                          text=True, timeout=timeout)


def test_finetune_and_evaluate_from_a_hub_dataset(served: dict, kaldi: dict[str, Path], tmp_path: Path) -> None:
    hf_home = tmp_path / "hf"
    common = ["--batch-bins", "200000", "--exclude", "decoder", "--json"]
    # A dry run from the Kaldi dirs and one from the dataset repo prepare the same Kaldi dirs for ESPnet.
    from_kaldi = espzoo(["finetune", REPO, "--train", str(kaldi["train"]), "--valid", str(kaldi["dev"]), "--out",
                         str(tmp_path / "k"), "--dry-run", *common], served, hf_home)
    assert from_kaldi.returncode == 0, from_kaldi.stderr[-3000:]
    out = tmp_path / "exp"
    train = espzoo(["finetune", REPO, "--train", f"hf:{DATASET}:train", "--valid", f"hf:{DATASET}@main:validation",
                    "--out", str(out), "--max-epoch", "1", *common], served, hf_home)
    assert train.returncode == 0, train.stderr[-3000:]
    for name in ("train", "valid"):
        assert kaldi_files(out / "data" / name) == kaldi_files(tmp_path / "k" / "data" / name)
    assert json.loads((out / "data" / "train" / "dataset.json").read_text())["source"] == f"hf:{DATASET}:train"
    assert (out / "model.pth").is_file()
    # Offline afterwards, like models: the test split is pulled now, then read again from the cache.
    scored = espzoo(["evaluate", str(out), "--data", f"hf:{DATASET}:test", "--beam", "1", "--json"], served, hf_home)
    assert scored.returncode == 0, scored.stderr[-3000:]
    offline = espzoo(["evaluate", str(out), "--data", f"hf:{DATASET}:test", "--beam", "1", "--json"], served,
                     hf_home, HF_HUB_OFFLINE="1")
    assert offline.returncode == 0, offline.stderr[-3000:]
    first, second = json.loads(scored.stdout), json.loads(offline.stdout)
    assert first["utterances"] == second["utterances"] == 3 and first["wer"] == second["wer"]
    assert (out / "eval" / "es-speech_test" / "result.json").is_file()


def test_plan_with_a_char_vocabulary_from_a_hub_dataset(served: dict, kaldi: dict[str, Path], tmp_path: Path) -> None:
    """`espzoo plan REPO --vocab char:hf:ORG/NAME:SPLIT`: the split pulled through the mirror gives the vocabulary
    the Kaldi dir gives; a column --text-column names that the split lacks is one sentence."""
    plans = []
    for text in (str(kaldi["train"]), f"hf:{DATASET}:train"):
        done = espzoo(["plan", REPO, "--vocab", f"char:{text}", "--json"], served, tmp_path / "hf")
        assert done.returncode == 0, done.stderr[-3000:]
        plans.append(json.loads(done.stdout)["summary"]["vocabulary"])
    assert plans[1]["size"] == plans[0]["size"] and plans[1]["shared_tokens"] == plans[0]["shared_tokens"]
    assert plans[1]["source"] == f"char:hf:{DATASET}:train" and plans[1]["token_type"] == "char"
    snapshot = next((tmp_path / "hf" / "hub" / "datasets--espzoo-test--es-speech" / "snapshots").iterdir())
    assert sorted(p.name for p in snapshot.rglob("*.parquet")) == ["train-00000-of-00002.parquet",
                                                                   "train-00001-of-00002.parquet"]
    bad = espzoo(["plan", REPO, "--vocab", f"char:hf:{DATASET}:train", "--text-column", "words"], served,
                 tmp_path / "hf")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [f"error: hf:{DATASET}:train has no column 'words' (its columns: audio, "
                                               "sentence, client_id); pass --text-column with one of them."]


@pytest.mark.parametrize("case", [
    ("a bad spec", ["--train", "hf:es-speech:train"], "is not a Hub dataset reference"),
    ("a missing split", ["--train", f"hf:{DATASET}:dev"], "has no parquet or arrow files for the split 'dev' (its "
                                                           "splits: test, train, validation)"),
    ("a missing dataset", ["--train", "hf:espzoo-test/nope:train"], "espzoo-test/nope does not exist"),
    ("a bad column", ["--train", f"hf:{DATASET}:train", "--text-column", "words"],
     "has no column 'words' (its columns: audio, sentence, client_id)"),
], ids=lambda c: c[0])
def test_bad_hub_data_is_one_sentence(case: tuple, served: dict, kaldi: dict[str, Path], tmp_path: Path) -> None:
    _, args, names = case
    done = espzoo(["finetune", REPO, *args, "--valid", str(kaldi["dev"]), "--out", str(tmp_path / "o"), "--dry-run",
                   "--json"],
                  served, tmp_path / "hf")
    lines = done.stderr.strip().splitlines()
    assert done.returncode not in (0, None) and "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and names in lines[0], done.stderr
    assert not (tmp_path / "o" / "data").exists()


def test_without_pyarrow_the_extra_is_named(served: dict, kaldi: dict[str, Path], tmp_path: Path) -> None:
    folder = write_parquet(rows_of(kaldi["dev"]), tmp_path / "pq", files=1)
    argv = ["espzoo", "finetune", REPO, "--train", str(folder), "--valid", str(kaldi["dev"]), "--out",
            str(tmp_path / "o"), "--dry-run", "--json"]
    blocked = f"import sys; sys.modules['pyarrow'] = None; from espzoo.cli.main import main; sys.argv = {argv!r}; " \
              "main()"
    done = subprocess.run([PYTHON, "-c", blocked], env=client_env(served["url"], tmp_path / "hf"), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode not in (0, None) and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: Reading Hugging Face datasets (parquet or arrow files) needs pyarrow, which espzoo's datasets extra "
        "installs: pip install 'espzoo[datasets]'."]
    assert not (tmp_path / "o" / "data").exists()


# ---------------------------------------------------------------------------------------------------------
# A dataset's file references stay inside it (issue 27, 1)


def _escaping_rows(kaldi: dict[str, Path], audio: str) -> list[dict]:
    """Three rows with embedded audio, then one whose audio cell names `audio` (a path, no bytes)."""
    rows = rows_of(kaldi["dev"])[:3]
    return [*rows, {"audio": {"bytes": None, "path": audio}, "sentence": "hola", "client_id": "x"}]


def test_a_hub_dataset_naming_a_file_outside_its_snapshot_is_refused(served: dict, kaldi: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    """An `hf:` split whose audio column names an absolute path or `../..` is refused in one sentence before any
    file is opened: a file that exists and one that does not give the same sentence, nothing is written (no
    wav.scp naming the file, no extracted audio, no OUT)."""
    real = (SPEECH / "train" / "audio" / "esf2-es0001.flac").resolve()
    assert real.is_file()
    missing = tmp_path / "nowhere" / "secret.flac"
    hostile = [str(real), str(missing), "../../../../../../../../" + str(real).lstrip("/"), "data/../../x.flac",
               "~/x.flac"]
    messages = []
    for n, value in enumerate(hostile):
        name = f"espzoo-test/escape{n}"
        write_parquet(_escaping_rows(kaldi, value), served["root"] / "datasets" / name / "data", files=1)
        out = tmp_path / f"o{n}"
        done = espzoo(["finetune", REPO, "--train", f"hf:{name}:train", "--valid", str(kaldi["dev"]), "--out",
                       str(out), "--dry-run", "--json"], served, tmp_path / "hf")
        lines = done.stderr.strip().splitlines()
        assert done.returncode not in (0, None) and "Traceback" not in done.stderr, done.stderr
        assert len(lines) == 1, done.stderr
        assert lines[0] == (f"error: hf:{name}:train train-00000-of-00001.parquet row 4 names the audio file "
                            f"{value!r}, which lies outside the dataset; a dataset's audio must be embedded in it or "
                            "lie inside its folder, so fix the dataset or list your own files in a CSV/TSV "
                            "manifest."), lines[0]
        messages.append(lines[0].replace(repr(value), "VALUE").replace(name, "NAME"))
        assert not out.exists(), sorted(p.name for p in out.rglob("*"))  # neither data, extracted audio nor lock
    assert len(set(messages)) == 1  # whether the file exists is not told


def test_a_local_dataset_naming_a_file_outside_its_folder_is_refused(kaldi: dict[str, Path], tmp_path: Path) -> None:
    """The same rule for parquet on disk: a relative path inside the folder is read, one through a symlink that
    leads out of it (or an absolute one) is refused before it is opened."""
    folder = tmp_path / "pq"
    (folder / "clips").mkdir(parents=True)
    shutil.copy(SPEECH / "train" / "audio" / "esf2-es0001.flac", folder / "clips" / "a.flac")
    (folder / "linked").symlink_to((SPEECH / "train" / "audio").resolve(), target_is_directory=True)
    (folder / "clips" / "b.flac").symlink_to((SPEECH / "train" / "audio" / "esf2-es0005.flac").resolve())
    write_parquet(_escaping_rows(kaldi, "clips/a.flac"), folder, files=1)
    inside = prepare(folder, tmp_path / "ok" / "train", sample_rate=16000)
    assert inside.num_utterances == 4
    assert str(folder / "clips" / "a.flac") in (inside.dir / "wav.scp").read_text()
    for n, value in enumerate(["linked/esf2-es0009.flac", "clips/b.flac", str(folder / "linked" / "x.flac")]):
        bad = tmp_path / f"bad{n}"
        write_parquet(_escaping_rows(kaldi, value), bad, files=1)
        shutil.move(bad / "train-00000-of-00001.parquet", folder / "train-00000-of-00001.parquet")
        with pytest.raises(DataError, match=rf"row 4 names the audio file '{value}', which lies outside the dataset"):
            prepare(folder, tmp_path / f"o{n}" / "train", sample_rate=16000)
        assert not (tmp_path / f"o{n}").exists()


def test_a_text_column_must_hold_strings_without_control_characters(kaldi: dict[str, Path], tmp_path: Path) -> None:
    """A transcript column of lists or bytes is not text (its str() would be trained on: `[1, 2]`, `b'\\xff\\xfe'`):
    one sentence naming the column and its type; a NUL byte in a string is a problem of that row."""
    rows = rows_of(kaldi["dev"])
    for n, (values, kind) in enumerate([([[1, 2]] * 4, "list<element: int64>"), ([b"\xff\xfe"] * 4, "binary")]):
        folder = write_parquet([{**r, "sentence": v} for r, v in zip(rows, values, strict=True)], tmp_path / f"t{n}",
                               files=1)
        with pytest.raises(DataError) as caught:
            prepare(folder, tmp_path / f"o{n}" / "dev", sample_rate=16000)
        assert str(caught.value) == (f"{folder}'s column 'sentence' holds {kind}, not text; pass --text-column with "
                                     "the column that holds the transcripts as strings.")
        assert not (tmp_path / f"o{n}").exists()
    rows[1]["sentence"] = "hola\x00mundo"
    folder = write_parquet(rows, tmp_path / "nul", files=1)
    with pytest.raises(DataError) as caught:
        prepare(folder, tmp_path / "o" / "dev", sample_rate=16000)
    (problem,) = caught.value.problems
    assert problem.where == "train-00000-of-00001.parquet row 2" and "control character '\\x00'" in problem.what
    kept = prepare(folder, tmp_path / "o" / "dev", sample_rate=16000, skip_bad=True)
    assert kept.num_utterances == 3 and "\x00" not in kept.text.read_text(encoding="utf-8")
