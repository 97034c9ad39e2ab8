"""Scores people trust and can look at: normalized WER, bootstrap intervals, paired comparisons, the HTML report
(rendered by a real headless Chromium), all on hand-made texts or a real tiny ESPnet model."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from _tiny_out import build_tiny_out, small_data_dir

from espzoo.decode.html_report import worst_first, write_html_report
from espzoo.decode.recognizer import DecodeOptions
from espzoo.decode.report import EvalReport, compare, evaluate, load_result, scored
from espzoo.decode.scores import bootstrap_ci, paired_difference, real_speakers, text_normalizer
from espzoo.decode.scoring import error_rates
from espzoo.errors import EmptyReferenceError, NotComparableError, ReportDirError

CASED = ["¿La puerta está abierta?", "¡Hola, señor García!", "«Buenos días», dijo   ella."]
PLAIN = ["LA PUERTA ESTÁ ABIERTA", "HOLA SEÑOR GARCÍA", "BUENOS DÍAS DIJO ELLA"]
# what a model trained on upper-case text without punctuation says: one accent lost, one word missing
SAID = ["LA PUERTA ESTA ABIERTA", "HOLA SEÑOR GARCÍA", "BUENOS DÍAS DIJO"]


# ---------------------------------------------------------------------------------------------------------
# Normalization


def test_normalizer_follows_the_rule() -> None:
    basic = text_normalizer("basic")
    assert "whisper-normalizer" in basic.name and "BasicTextNormalizer" in basic.name
    assert basic("¿La puerta está abierta?") == "la puerta está abierta"  # case, ¿ ? gone, accents kept
    assert basic("¡Hola!  «Qué   tal»\t") == "hola qué tal"  # ¡ ! « » gone, spaces collapsed, ends stripped
    assert basic("ﬁn Ｆｕｌｌ") == "fin full"  # NFKC: the ligature and the full-width letters
    assert basic("el nin\u0303o") == basic("el niño") == "el niño"  # a combining tilde composed
    assert basic("আমি বাংলায় গান গাই") == "আমি বাংলায় গান গাই"  # vowel signs (marks) kept: words not split
    assert basic("[noise] yes (laughs)") == "yes"  # bracketed tags, as Whisper's normalizer removes them


def test_english_gets_whisper_s_english_normalizer() -> None:
    english = text_normalizer("auto", "en")
    assert "EnglishTextNormalizer" in english.name
    assert text_normalizer("auto", "English").name == english.name
    assert english("Mr. Smith won't go, uh, today!") == "mister smith will not go today"
    assert "BasicTextNormalizer" in text_normalizer("auto", "es").name
    assert "BasicTextNormalizer" in text_normalizer("auto", None).name
    assert text_normalizer("none") is None
    with pytest.raises(ValueError, match="normalizer 'loud' is unknown"):
        text_normalizer("loud")


def test_cased_punctuated_references_score_as_plain_ones_once_normalized() -> None:
    normalize = text_normalizer("basic")
    orthographic = error_rates(CASED, SAID)
    normalized = error_rates(CASED, SAID, normalize)
    plain = error_rates(PLAIN, SAID)
    assert normalized.wer.rate < orthographic.wer.rate  # case and punctuation no longer count
    assert orthographic.wer.rate == 1.0  # every word differs in case or carries punctuation
    assert normalized.wer == plain.wer == error_rates(PLAIN, SAID, normalize).wer  # 2 errors / 11 words
    assert normalized.wer.rate == pytest.approx(2 / 11)
    assert normalized.cer == error_rates(PLAIN, SAID, normalize).cer


# ---------------------------------------------------------------------------------------------------------
# Intervals


def test_bootstrap_interval_contains_the_rate_and_is_seeded() -> None:
    refs = [f"w{k} a b c d" for k in range(40)]
    hyps = [ref if k % 3 else ref.replace(" a b", " x") for k, ref in enumerate(refs)]
    scores = scored([f"u{k}" for k in range(40)], refs, hyps, [f"u{k}" for k in range(40)], None)
    wer = scores["wer"].rate
    lo, hi = scores["ci95"]["wer"]
    assert lo < wer < hi and hi - lo < 0.2
    assert scores["resampled"] == "utterances"
    again = scored([f"u{k}" for k in range(40)], refs, hyps, [f"u{k}" for k in range(40)], None)
    assert again["ci95"] == scores["ci95"]  # deterministic
    assert bootstrap_ci([0, 0], [3, 4]) == (0.0, 0.0)
    assert bootstrap_ci([], []) is None


def test_speakers_are_resampled_when_the_data_names_them() -> None:
    ids = [f"u{k}" for k in range(8)]
    assert not real_speakers(ids, ids)  # no utt2spk: each utterance its own speaker
    speakers = ["a", "a", "a", "a", "b", "b", "b", "b"]
    assert real_speakers(speakers, ids)
    # speaker a gets everything wrong, b everything right: by speaker, half the draws are all-a or all-b
    errors, lengths = [1, 1, 1, 1, 0, 0, 0, 0], [1] * 8
    by_speaker = bootstrap_ci(errors, lengths, speakers)
    by_utterance = bootstrap_ci(errors, lengths)
    assert by_speaker == (0.0, 1.0)  # two speakers: the interval is as wide as it can be
    assert by_utterance[0] > 0.0 and by_utterance[1] < 1.0
    refs = ["a b"] * 8
    assert scored(ids, refs, refs, speakers, None)["resampled"] == "speakers"


def test_paired_difference() -> None:
    assert paired_difference([1, 2, 0], [1, 2, 0], [5, 5, 5]) == (0.0, (0.0, 0.0))
    errors_a = [3, 2, 4, 3, 2, 3, 4, 2, 3, 3] * 3
    errors_b = [1, 0, 2, 1, 1, 0, 1, 1, 2, 0] * 3
    difference, (lo, hi) = paired_difference(errors_a, errors_b, [10] * 30)
    assert difference == pytest.approx((sum(errors_b) - sum(errors_a)) / 300)
    assert lo <= difference <= hi < 0  # B is better, and the interval says so


def _report(ids: list[str], refs: list[str], hyps: list[str], model: str = "m") -> EvalReport:
    return EvalReport(model, "d", beam_size=4, ctc_weight=0.3, audio_seconds=1.0, decode_seconds=0.5,
                      **scored(ids, refs, hyps, ids, text_normalizer("basic")))


def test_compare_two_runs_on_the_same_data() -> None:
    ids = [f"u{k}" for k in range(3)]
    before = _report(ids, CASED, ["la puerta", "hola", "buenos"], "before")
    after = _report(ids, CASED, SAID, "after")
    comparison = compare(before, after).to_dict()
    assert (comparison["a"], comparison["b"], comparison["utterances"]) == ("before", "after", 3)
    normalized = comparison["normalized_wer"]
    assert normalized["b"] == pytest.approx(2 / 11) and normalized["a"] > normalized["b"]
    assert normalized["difference"] == pytest.approx(normalized["b"] - normalized["a"], abs=1e-6)
    assert normalized["ci95"][0] <= normalized["difference"] <= normalized["ci95"][1]
    assert comparison["bootstrap"]["paired"] is True
    with pytest.raises(NotComparableError, match="not evaluated on the same utterances"):
        compare(before, _report(ids[:2], CASED[:2], SAID[:2]))


def test_result_json_has_everything_a_script_needs(tmp_path: Path) -> None:
    from espzoo.decode.report import write_report

    report = _report(["u1", "u2", "u3"], CASED, SAID)
    data = report.to_dict(rows=False)
    assert data["normalized"]["wer"] == pytest.approx(2 / 11) and data["wer"] == 1.0
    assert "BasicTextNormalizer" in data["normalized"]["normalizer"]
    assert data["ci95"]["wer"][0] <= data["wer"] <= data["ci95"]["wer"][1]
    assert set(data["ci95"]) == {"wer", "cer"} and set(data["normalized"]["ci95"]) == {"wer", "cer"}
    assert data["per_utterance"][2] == {"id": "u3", "ref": CASED[2], "hyp": SAID[2], "errors": 4, "words": 4}
    write_report(report, tmp_path / "r")
    loaded = load_result(tmp_path / "r")
    assert (loaded.wer, loaded.normalized.wer, loaded.ci95) == (report.wer, report.normalized.wer, report.ci95)


# ---------------------------------------------------------------------------------------------------------
# The HTML report, in a real browser

CHROMIUM = Path("/usr/bin/chromium")


def _chromium(page: Path, tmp_path: Path) -> tuple[Path, str]:
    """A screenshot and the DOM of `page`, from Debian's headless Chromium (no network, a fresh profile)."""
    if not CHROMIUM.is_file():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
    flags = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    shot = tmp_path / "shot.png"
    for name, extra in (("shot", [f"--screenshot={shot}", "--window-size=1280,2000"]), ("dom", ["--dump-dom"])):
        profile = tmp_path / f"profile-{name}"
        profile.mkdir()
        done = subprocess.run([*flags, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        if name == "dom":
            dom = done.stdout
    return shot, dom


def test_html_report_lists_every_utterance_worst_first(tmp_path: Path) -> None:
    ids = ["good", "worst", "middle"]
    refs = ["the cat sat on the mat", "¿Dónde está la biblioteca?", "a b c d"]
    hyps = ["the cat sat on the mat", "adonde esta", "a x c d e"]
    report = _report(ids, refs, hyps)
    assert [r.id for r in worst_first(report.rows)] == ["worst", "middle", "good"]
    page = write_html_report(report, tmp_path / "report")
    text = page.read_text(encoding="utf-8")
    assert [text.index(f'id="utt-{utt}"') for utt in ("worst", "middle", "good")] == sorted(
        text.index(f'id="utt-{utt}"') for utt in ids
    )
    assert "http://" not in text and "https://" not in text and "<script" not in text  # nothing fetched
    assert '<span class="op">S</span>' in text and '<span class="op">D</span>' in text
    assert '<span class="op">I</span>' in text
    shot, dom = _chromium(page, tmp_path)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    assert "worst" in dom and 'id="utt-worst"' in dom and "biblioteca" in dom


def test_report_dir_with_other_files_is_refused_unless_forced(tmp_path: Path) -> None:
    report = _report(["u1"], ["a b"], ["a"])
    folder = tmp_path / "report"
    write_html_report(report, folder)
    write_html_report(report, folder)  # an earlier report is replaced
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ReportDirError, match="already holds other files \\(notes.txt\\).*--force"):
        write_html_report(report, folder)
    assert (folder / "notes.txt").is_file()
    write_html_report(report, folder, force=True)
    assert sorted(p.name for p in folder.iterdir()) == ["index.html"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no temp folders left


# ---------------------------------------------------------------------------------------------------------
# With a real tiny ESPnet model


@pytest.fixture(scope="module")
def tiny_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_out(tmp_path_factory.mktemp("tiny") / "out")


def _cased_copy(data: Path, dest: Path) -> Path:
    """`data` with its references written as people write them: capitalized, punctuated, quoted."""
    shutil.copytree(data, dest)
    lines = []
    for k, line in enumerate((data / "text").read_text(encoding="utf-8").splitlines()):
        utt, text = line.split(maxsplit=1)
        lines.append(f"{utt} «{text[0].upper()}{text[1:]}{'?!'[k % 2]}»\n")
    (dest / "text").write_text("".join(lines), encoding="utf-8")
    return dest


def test_cli_evaluate_reports_normalized_scores_intervals_and_a_page(tiny_out: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from espzoo.cli.main import app

    data = small_data_dir(tmp_path / "test", count=2)
    cased = _cased_copy(data, tmp_path / "cased")
    runner = CliRunner()
    args = ["--beam", "2", "--json", "--rows"]
    plain = runner.invoke(app, ["evaluate", str(tiny_out), "--data", str(data), *args, "--out-dir",
                                str(tmp_path / "p")])
    assert plain.exit_code == 0, plain.output
    done = runner.invoke(app, ["evaluate", str(tiny_out), "--data", str(cased), *args, "--out-dir",
                               str(tmp_path / "c"), "--report", str(tmp_path / "report")])
    assert done.exit_code == 0, done.output
    result, reference = json.loads(done.stdout), json.loads(plain.stdout)
    assert "EnglishTextNormalizer" in result["normalized"]["normalizer"]  # the model's provenance says English
    assert result["normalized"]["wer"] == reference["normalized"]["wer"]
    assert result["normalized"]["cer"] < result["cer"]
    assert result["ci95"]["cer"][0] <= result["cer"] <= result["ci95"]["cer"][1]
    assert [u["id"] for u in result["per_utterance"]] == [u["id"] for u in reference["per_utterance"]]
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert all(f'id="utt-{u["id"]}"' in page for u in result["per_utterance"])

    table = runner.invoke(app, ["evaluate", str(tiny_out), "--data", str(cased), "--beam", "2"])
    assert table.exit_code == 0, table.output
    assert "WER normalized" in table.stdout and "95% CI" in table.stdout

    (cased / "text").write_text("".join(f"{line.split()[0]} ¿?\n" for line in (data / "text").read_text().splitlines()))
    empty = runner.invoke(app, ["evaluate", str(tiny_out), "--data", str(cased)])
    assert empty.exit_code == 1 and empty.stderr.startswith("error: 2 reference(s) have no words left")
    assert empty.stderr.count("\n") == 1 and "--normalizer none" in empty.stderr and "Traceback" not in empty.output
    with pytest.raises(EmptyReferenceError):
        evaluate(tiny_out, cased, tmp_path / "e")
    assert not (tmp_path / "e").exists()

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("mine")
    refused = runner.invoke(app, ["evaluate", str(tiny_out), "--data", str(data), "--report", str(tmp_path / "busy")])
    assert refused.exit_code == 1 and "already holds other files" in refused.stderr


def test_cli_compares_two_models_on_the_same_data(tiny_out: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from espzoo.cli.main import app

    other = build_tiny_out(tmp_path / "other", seed=1)
    data = small_data_dir(tmp_path / "test", count=2)
    runner = CliRunner()
    done = runner.invoke(app, ["evaluate", str(other), str(tiny_out), "--data", str(data), "--beam", "2", "--json",
                               "--decode", "ctc-greedy"])
    assert done.exit_code == 0, done.output
    both = json.loads(done.stdout)
    comparison = both["comparison"]
    assert (comparison["a"], comparison["b"]) == (str(other), str(tiny_out))
    assert comparison["wer"]["a"] == both["a"]["wer"] and comparison["wer"]["b"] == both["b"]["wer"]
    assert comparison["wer"]["difference"] == pytest.approx(both["b"]["wer"] - both["a"]["wer"], abs=1e-6)
    # B is an experiment dir: its result.json records the comparison, for export's before/after
    saved = json.loads((tiny_out / "eval" / "test" / "result.json").read_text(encoding="utf-8"))
    assert saved["baseline"]["a"] == str(other)
    # against the saved result of the other model: the same numbers, without decoding it again
    again = runner.invoke(app, ["evaluate", str(tiny_out), "--data", str(data), "--decode", "ctc-greedy", "--json",
                                "--compare", str(other / "eval" / "test")])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["baseline"] == comparison


def test_evaluate_with_a_report_of_an_experiment(tiny_out: Path, tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    out = tmp_path / "out"
    shutil.copytree(tiny_out, out, ignore=shutil.ignore_patterns("eval"))
    (out / "espnet" / "images").mkdir(parents=True)
    figure = pyplot.figure(figsize=(4, 3))
    pyplot.plot([1, 2, 3], [3.0, 2.0, 1.5], label="train")
    figure.savefig(out / "espnet" / "images" / "loss.png")  # as ESPnet's --use_matplotlib draws them
    pyplot.close(figure)
    data = small_data_dir(tmp_path / "test", count=1)
    report = evaluate(out, data, options=DecodeOptions(decode="ctc-greedy"), html=tmp_path / "report")
    assert report.experiment == out.resolve()
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert "Training curves" in page and page.count("data:image/png;base64,") == 1


# ---------------------------------------------------------------------------------------------------------
# Results on the Hub


def test_export_writes_a_model_index_the_hub_reads(tiny_out: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    from huggingface_hub import ModelCard, metadata_load

    from espzoo.decode.report import write_report
    from espzoo.publish.hub_layout import ExportOptions, export

    out = tmp_path / "out"
    shutil.copytree(tiny_out, out, ignore=shutil.ignore_patterns("eval"))
    ids = ["u1", "u2", "u3"]
    before = _report(ids, CASED, ["la puerta", "hola", "buenos"], "espzoo-test/tiny_char")
    after = replace(_report(ids, CASED, SAID, str(out)), data="data/test")
    after = replace(after, baseline=compare(before, after).to_dict())
    write_report(after, out / "eval" / "test")
    dest = export(out, tmp_path / "repo", ExportOptions(repo_id="me/tiny_es", datasets=["my_corpus"]))

    card = ModelCard.load(dest / "README.md")
    results = card.data.eval_results  # one per metric
    assert {(r.task_type, r.dataset_type, r.dataset_name, r.dataset_split) for r in results} == {
        ("automatic-speech-recognition", "my_corpus", "my_corpus", "test")}
    assert card.data.model_name == "tiny_es"
    metrics = {r.metric_name: r.metric_value for r in results}
    assert metrics == {"WER": 100.0, "CER": pytest.approx(100 * after.cer.rate, abs=0.01),
                       "WER (normalized)": pytest.approx(100 * 2 / 11, abs=0.01),
                       "CER (normalized)": pytest.approx(100 * after.normalized.cer.rate, abs=0.01)}
    index = metadata_load(dest / "README.md")["model-index"][0]
    assert [m["type"] for m in index["results"][0]["metrics"]] == ["wer", "cer", "wer", "cer"]
    assert "BasicTextNormalizer" in index["results"][0]["metrics"][2]["args"]["normalizer"]
    readme = (dest / "README.md").read_text(encoding="utf-8")
    assert "Before: `espzoo-test/tiny_char`." in readme
    difference = 100 * after.baseline["normalized_wer"]["difference"]
    row = f"| test | NORMALIZED WER | {100 * before.normalized.wer.rate:.1f} | {100 * 2 / 11:.1f} | {difference:+.1f}"
    assert row in readme


def test_before_after_on_the_new_domain_and_a_general_set(tiny_out: Path, tmp_path: Path) -> None:
    """What `espzoo finetune --guard` runs after training: the pretrained and the fine-tuned model on both sets."""
    from espzoo.decode.report import before_after
    from espzoo.publish.hub_layout import export

    pretrained = Path(__file__).resolve().parent.parent / "zoo/assets/pretrained/espzoo-demo/tiny-en-char"
    out = tmp_path / "out"
    shutil.copytree(tiny_out, out, ignore=shutil.ignore_patterns("eval"))
    new = small_data_dir(tmp_path / "new", lang="es", count=1)
    general = small_data_dir(tmp_path / "general", lang="en", count=1)
    comparisons = before_after(str(pretrained), out, [new, general], options=DecodeOptions(decode="ctc-greedy"))
    assert [(c.a, c.b, c.data) for c in comparisons] == [(str(pretrained), str(out), str(d)) for d in (new, general)]
    for comparison in comparisons:
        wer = comparison.metrics["wer"]
        assert wer["difference"] == pytest.approx(wer["b"] - wer["a"], abs=1e-6)
        assert "EnglishTextNormalizer" in comparison.metrics["normalizer"]  # the fine-tuned model's language: en
    general_result = json.loads((out / "eval" / "general" / "result.json").read_text(encoding="utf-8"))
    assert general_result["baseline"] == comparisons[1].to_dict()
    readme = (export(out, tmp_path / "repo") / "README.md").read_text(encoding="utf-8")
    assert "Before: `tiny-en-char`." in readme and str(tmp_path) not in readme  # no path of this machine
    assert "| new | WER |" in readme and "| general | WER |" in readme
