"""Every command against bad input, as a careless or unlucky user gives it: each ends in one sentence on stderr
that names the file or value, exit != 0, no traceback, and nothing a later run would trust is written or changed.

The commands run as installed console scripts against the real mirror on 127.0.0.1 (tiny real ESPnet repos).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from _hubtools import ESPZOO, client_env
from _paths import SPEECH_ROOT

from espzoo.serve.server import MirrorServer

SPEECH = SPEECH_ROOT / "es"
REPO = "espzoo-test/tiny-char"


@dataclass(frozen=True)
class Case:
    name: str
    args: list[str]  # {w} is the work folder
    names: str  # what the sentence must name (formatted with {w})
    untouched: tuple[str, ...] = ()  # paths (under {w}) that must not appear
    env: dict[str, str] = field(default_factory=dict)


def _subset(dest: Path, n: int = 6) -> Path:
    dest.mkdir(parents=True)
    rows = [line.split(maxsplit=1) for line in (SPEECH / "train" / "wav.scp").read_text().splitlines()[:n]]
    text = (SPEECH / "train" / "text").read_text(encoding="utf-8")
    texts = dict(line.split(maxsplit=1) for line in text.splitlines())
    (dest / "wav.scp").write_text("".join(f"{u} {(SPEECH / 'train' / p).resolve()}\n" for u, p in rows))
    (dest / "text").write_text("".join(f"{u} {texts[u]}\n" for u, _ in rows), encoding="utf-8")
    return dest


@pytest.fixture(scope="module")
def work(mirror_root: Path, tiny_repo_char: Path, tiny_repo_bpe: Path, tmp_path_factory: pytest.TempPathFactory):
    w = tmp_path_factory.mktemp("bad")
    good = _subset(w / "good")
    latin1 = _subset(w / "latin1")
    (latin1 / "text").write_bytes((latin1 / "text").read_text(encoding="utf-8").replace("a", "á", 1).encode("latin-1"))
    cut = _subset(w / "cut")
    first = Path((cut / "wav.scp").read_text().split()[1])
    audio, rate = sf.read(str(first))
    whole = w / "whole.flac"
    sf.write(str(whole), np.tile(audio, 3), rate)
    (w / "cut.flac").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    lines = (cut / "wav.scp").read_text().splitlines()
    lines[0] = f"{lines[0].split()[0]} {w / 'cut.flac'}"
    (cut / "wav.scp").write_text("\n".join(lines) + "\n")
    (w / "empty_cell.csv").write_text(f"audio,text\n,hola\n{first},adiós\n", encoding="utf-8")
    (w / "no_audio_column.csv").write_text(f"sound,text\n{first},hola\n", encoding="utf-8")
    (w / "plain.txt").write_text("not a data set\n")
    # A hub-layout repo whose bpe.model is garbage, and one whose token list repeats a token.
    shutil.copytree(tiny_repo_bpe, w / "garbage_bpe")
    for model in (w / "garbage_bpe").rglob("bpe.model"):
        model.write_bytes(b"not a sentencepiece model\n" * 20)
    shutil.copytree(tiny_repo_char, w / "dup_tokens")
    for config_path in (w / "dup_tokens").rglob("config.yaml"):
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        if isinstance(config, dict) and isinstance(config.get("token_list"), list):
            config["token_list"].insert(3, config["token_list"][3])
            config_path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    # A 1 MB transcript line, and a 61 s recording (the limit is 60 s).
    huge = _subset(w / "huge_text")
    lines = (huge / "text").read_text(encoding="utf-8").splitlines()
    lines[0] = lines[0].split()[0] + " " + ("hola " * 209716)[:1 << 20]
    (huge / "text").write_text("\n".join(lines) + "\n", encoding="utf-8")
    long = _subset(w / "long_audio")
    sf.write(str(w / "long.flac"), np.tile(audio, int(61 * rate / len(audio)) + 1), rate)
    lines = (long / "wav.scp").read_text().splitlines()
    lines[0] = f"{lines[0].split()[0]} {w / 'long.flac'}"
    (long / "wav.scp").write_text("\n".join(lines) + "\n")
    # As a manifest: a Kaldi dir without segments is cut at pauses by alignment (train.longdata); a manifest's
    # utterances are taken as they are, so one over the limit is refused.
    texts = dict(line.split(maxsplit=1) for line in (long / "text").read_text(encoding="utf-8").splitlines())
    rows = [line.split(maxsplit=1) for line in lines]
    (w / "long_audio.tsv").write_text("id\tpath\ttext\n" + "".join(f"{u}\t{a}\t{texts[u]}\n" for u, a in rows),
                                      encoding="utf-8")
    # A long recording is cut at pauses (espzoo.decode.longform); one of silence only has nothing to cut.
    sf.write(str(w / "six_minutes.flac"), np.zeros(361 * rate, dtype="float32"), rate)
    (w / "not_a_dir").write_text("a file where OUT should go\n")
    (w / "unfinished" / "espnet").mkdir(parents=True)
    (w / "unfinished" / "config.yaml").write_text("encoder: conformer\n")
    server = MirrorServer(mirror_root)
    url = server.start()
    hf_home = w / "hf"
    pulled = subprocess.run([ESPZOO, "pull", REPO, "--json"], env=client_env(url, hf_home), capture_output=True,
                            text=True, timeout=300)
    assert pulled.returncode == 0, pulled.stderr
    yield {"w": w, "url": url, "hf_home": hf_home, "good": good}
    server.stop()


FT = ["finetune", REPO, "--valid", "{w}/good", "--max-epoch", "1", "--json"]
CASES = [
    Case("non-UTF-8 transcripts", [*FT, "--train", "{w}/latin1", "--out", "{w}/o1"], "{w}/latin1/text is not UTF-8",
         ("o1/data/train", "o1/conf", "o1/init")),
    Case("a truncated FLAC", [*FT, "--train", "{w}/cut", "--out", "{w}/o2"], "{w}/cut.flac", ("o2/data", "o2/conf")),
    Case("an empty audio cell", [*FT, "--train", "{w}/empty_cell.csv", "--out", "{w}/o3"], "empty_cell.csv:2",
         ("o3/data",)),
    Case("a manifest without an audio column", [*FT, "--train", "{w}/no_audio_column.csv", "--out", "{w}/o4"],
         "no_audio_column.csv has no audio column", ("o4/data",)),
    Case("not a data set", [*FT, "--train", "{w}/plain.txt", "--out", "{w}/o5"], "{w}/plain.txt", ("o5/data",)),
    Case("bpe:3000000000", [*FT, "--train", "{w}/good", "--out", "{w}/o6", "--vocab", "bpe:3000000000"],
         "bpe:3000000000", ("o6",)),
    Case("bpe:²", [*FT, "--train", "{w}/good", "--out", "{w}/o7", "--vocab", "bpe:\u00b2"], "bpe:\u00b2", ("o7",)),
    Case("a garbage bpe.model in the repo", ["finetune", "{w}/garbage_bpe", "--train", "{w}/good", "--valid",
         "{w}/good", "--out", "{w}/o8", "--max-epoch", "1", "--json"], "bpe.model is not a sentencepiece model",
         ("o8/init", "o8/conf")),
    Case("duplicate tokens in the repo", ["plan", "{w}/dup_tokens", "--json"], "repeats"),
    Case("duplicate tokens in the repo (finetune)", ["finetune", "{w}/dup_tokens", "--train", "{w}/good", "--valid",
         "{w}/good", "--out", "{w}/o9", "--max-epoch", "1", "--json"], "repeats", ("o9",)),
    Case("a 1 MB transcript line", [*FT, "--train", "{w}/huge_text", "--out", "{w}/o12"],
         "[esf2-es0001]: the transcript holds 1,048,576 characters, over the ", ("o12",)),
    Case("a recording longer than 60 s", [*FT, "--train", "{w}/long_audio.tsv", "--out", "{w}/o13"],
         "[esf2-es0001]: the audio lasts 61.", ("o13",)),
    Case("OUT is a file", [*FT, "--train", "{w}/good", "--out", "{w}/not_a_dir"], "{w}/not_a_dir"),
    Case("an override that is not key=value", [*FT, "--train", "{w}/good", "--out", "{w}/o10", "--conf", "lr"],
         "'lr'", ("o10/conf", "o10/model.pth")),
    Case("zero epochs", [*FT, "--train", "{w}/good", "--out", "{w}/o11", "--max-epoch", "0"], "max_epoch",
         ("o11",)),
    Case("an unknown model", ["pull", "espzoo-test/nope"], "espzoo-test/nope"),
    Case("a bad revision", ["pull", f"{REPO}@v99"], "v99"),
    Case("plan with a missing vocabulary file", ["plan", REPO, "--vocab", "{w}/missing.txt"], "{w}/missing.txt"),
    Case("evaluate non-UTF-8 transcripts", ["evaluate", REPO, "--data", "{w}/latin1", "--json"],
         "{w}/latin1/text is not UTF-8"),
    Case("transcribe a missing file", ["transcribe", REPO, "{w}/missing.wav"], "{w}/missing.wav"),
    Case("transcribe a 6-minute recording of silence", ["transcribe", REPO, "{w}/six_minutes.flac"],
         "{w}/six_minutes.flac holds no speech the voice-activity detector can find (361.0 s of silence"),
    Case("export an unfinished experiment", ["export", "{w}/unfinished", "--out", "{w}/repo"], "{w}/unfinished",
         ("repo",)),
    Case("mirror serve a missing root", ["mirror", "serve", "--root", "{w}/nowhere", "--port", "0"], "{w}/nowhere"),
    Case("mirror add a bad repo id", ["mirror", "add", "no-slash", "--root", "{w}/mirror"], "no-slash",
         ("mirror",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_sentence(case: Case, work: dict) -> None:
    w = work["w"]
    args = [a.format(w=w) for a in case.args]
    before = {p: p.stat().st_mtime_ns for p in work["good"].rglob("*")}
    done = subprocess.run([ESPZOO, *args], env=client_env(work["url"], work["hf_home"], **case.env),
                          capture_output=True, text=True, timeout=600)
    lines = done.stderr.strip().splitlines()
    assert done.returncode not in (0, None), done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert case.names.format(w=w) in lines[0], lines[0]
    for rel in case.untouched:
        assert not (w / rel).exists(), f"{rel} was written"
    assert before == {p: p.stat().st_mtime_ns for p in work["good"].rglob("*")}  # the user's data is never touched


def test_skip_bad_says_how_many_it_dropped_and_where_the_list_is(work: dict) -> None:
    w = work["w"]
    out = w / "skipped_out"
    done = subprocess.run(
        [ESPZOO, "finetune", REPO, "--train", str(w / "cut"), "--valid", str(w / "good"), "--out", str(out),
         "--skip-bad", "--dry-run", "--json"],
        env=client_env(work["url"], work["hf_home"]), capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    listing = out / "data" / "train" / "skipped.txt"
    assert f"--skip-bad dropped 1 utterance(s) from the train set (kept 5); the list with the reasons is {listing}" in (
        " ".join(done.stderr.split()))
    assert "cut.flac" in listing.read_text()


@pytest.mark.parametrize("args", [["finetune", "--help"], ["--help"], ["--version"], ["search"], ["search", "--json"],
                                  ["search", "bengali", "--json"]], ids=" ".join)
def test_a_closed_pipe_ends_quietly(args: list[str], tmp_path: Path) -> None:
    """`espzoo finetune --help | head -1`, `| grep -q X`: the reader left before espzoo wrote (a pipe whose read
    end is closed, so every run meets it): exit 0 or 141, nothing on stderr, no crash report."""
    import os

    read, write = os.pipe()
    os.close(read)
    home = tmp_path / "home"
    try:
        done = subprocess.run([ESPZOO, *args], stdout=write, stderr=subprocess.PIPE, text=True, timeout=120,
                              env={**os.environ, "ESPZOO_HOME": str(home)})
    finally:
        os.close(write)
    assert done.returncode in (0, 141), (done.returncode, done.stderr)
    assert done.stderr == ""
    assert not (home / "crash").exists()


def test_a_common_voice_folder_as_downloaded_and_its_missing_clip(work: dict) -> None:
    """`--train cv-corpus-X/es/train.tsv --valid cv-corpus-X/es/dev` (the folder and the split): the clips/ beside
    the tables are found and the text is kept as written; a clip missing from clips/ is one sentence that names it
    and the command line's --skip-bad (not the library's skip_bad=True)."""
    from _hubtools import CV_SENTENCES, common_voice

    w = work["w"]
    lang = common_voice(w / "cv", "train")
    common_voice(w / "cv", "dev", n=3)
    env = client_env(work["url"], work["hf_home"])
    out = w / "cv_out"
    done = subprocess.run([ESPZOO, "finetune", REPO, "--train", str(lang / "train.tsv"), "--valid", str(lang / "dev"),
                           "--out", str(out), "--dry-run", "--json"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    written = (out / "data" / "train" / "text").read_text(encoding="utf-8")
    assert f"common_voice_es_train0 {CV_SENTENCES[0]}\n" in written  # quotes, case and punctuation as written
    (lang / "clips" / "common_voice_es_train2.mp3").unlink()
    done = subprocess.run([ESPZOO, "finetune", REPO, "--train", str(lang / "train"), "--valid", str(lang / "dev"),
                           "--out", str(w / "cv_out2"), "--dry-run", "--json"], env=env, capture_output=True,
                          text=True, timeout=600)
    lines = done.stderr.strip().splitlines()
    assert done.returncode not in (0, None) and len(lines) == 1, done.stderr
    assert f"audio file not found: {lang / 'clips' / 'common_voice_es_train2.mp3'}" in lines[0]
    assert lines[0].endswith("; or pass --skip-bad to drop it.") and "skip_bad" not in lines[0], lines[0]
    assert not (w / "cv_out2").exists()


def test_normalization_stats_that_are_not_numbers_are_refused(tiny_repo_char: Path, tmp_path: Path) -> None:
    """A feats_stats.npz holding an object array (a pickle) or strings: `plan` and `transcribe` refuse it in one
    sentence naming the file, never "internal error: ValueError" (issue 27: 15)."""
    import os

    audio = next((SPEECH / "train" / "audio").glob("*.flac"))
    for n, (values, said) in enumerate([(np.array([{"x": 1}], dtype=object), "holds Python objects, not numbers"),
                                        (np.array(["a", "b"]), "holds <U1 in sum")]):
        repo = tmp_path / f"repo{n}"
        shutil.copytree(tiny_repo_char, repo)
        (stats,) = repo.rglob("feats_stats.npz")
        good = dict(np.load(stats))
        with open(stats, "wb") as f:
            np.savez(f, **{**good, "sum": values})
        for args in (["plan", str(repo), "--json"], ["transcribe", str(repo), str(audio)]):
            done = subprocess.run([ESPZOO, *args], capture_output=True, text=True, timeout=300,
                                  env={**os.environ, "ESPZOO_HOME": str(tmp_path / "home")})
            lines = done.stderr.strip().splitlines()
            assert done.returncode not in (0, None) and "Traceback" not in done.stderr, done.stderr
            assert len(lines) == 1 and lines[0].startswith(f"error: {stats} ") and said in lines[0], done.stderr
    assert not (tmp_path / "home" / "crash").exists()
