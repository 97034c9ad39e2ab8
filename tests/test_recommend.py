"""`espzoo recommend` and multilingual coverage: the ranking on a fixture catalog, the JSON schema, the commands it
prints, and the shipped catalog's multilingual models found for every language they cover."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from espzoo.catalog.catalog import Catalog
from espzoo.catalog.entries import parse_size, shipped_catalog_path, size_label
from espzoo.catalog.recommendation import RecommendOptions, finetune_command, recommend
from espzoo.catalog.rows import merge_entries
from espzoo.cli.main import app
from espzoo.errors import CatalogError

runner = CliRunner()
SIX = ["eng", "spa", "por", "msa", "deu", "jpn"]
OWSM = {"task": "s2t", "languages": SIX, "language_token": "iso639-3", "tokens": {"type": "bpe", "size": 50000}}
FIXTURE = [
    {"repo_id": "a/spa_bad", "task": "asr", "languages": ["spa"],
     "results": [{"test_set": "test", "metric": "wer", "value": 30.0}]},
    {"repo_id": "a/spa_good", "task": "asr", "languages": ["spa"], "corpus": "mls",
     "results": [{"test_set": "dev", "metric": "wer", "value": 12.0},
                 {"test_set": "test", "metric": "wer", "value": 10.0}]},
    {"repo_id": "a/spa_quiet", "task": "asr", "languages": ["spa"]},
    {"repo_id": "a/eng_spa", "task": "asr", "languages": ["eng", "spa"],
     "results": [{"test_set": "cs", "metric": "wer", "value": 5.0}]},
    {"repo_id": "a/por", "task": "asr", "languages": ["por"],
     "results": [{"test_set": "t", "metric": "wer", "value": 8.0}]},
    {"repo_id": "a/rus", "task": "asr", "languages": ["rus"]},
    {"repo_id": "a/tts_spa", "task": "tts", "languages": ["spa"]},
    {"repo_id": "espnet/owsm_small", **OWSM, "params": 367_000_000, "train_hours": 180_000},
    {"repo_id": "pyf98/owsm_small", **OWSM, "params": 367_000_000, "train_hours": 180_000},  # a mirror
    {"repo_id": "espnet/owsm_big", **OWSM, "params": 1_020_000_000, "train_hours": 320_000},
    {"repo_id": "a/fleurs", "task": "asr", "languages": SIX, "language_token": "fleurs"},
]


@pytest.fixture()
def fixture_catalog(tmp_path: Path) -> Catalog:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"entries": FIXTURE}))
    return Catalog.load(path)


def ranked(catalog: Catalog, lang: str, **kw: object) -> list[tuple[int, str]]:
    advice = recommend(catalog, RecommendOptions(lang, **kw))  # type: ignore[arg-type]
    return [(item.tier, item.entry.repo_id) for item in advice.items]


# --- ranking -------------------------------------------------------------------------------------------------


def test_trained_by_reported_error_then_multilingual_by_data_and_size(fixture_catalog: Catalog) -> None:
    assert ranked(fixture_catalog, "es") == [
        (1, "a/eng_spa"), (1, "a/spa_good"), (1, "a/spa_bad"), (1, "a/spa_quiet"),  # lowest error first
        (2, "espnet/owsm_big"), (2, "espnet/owsm_small"), (2, "a/fleurs"),  # more audio first; the mirror once
    ]
    advice = recommend(fixture_catalog, RecommendOptions("spanish"))
    assert advice.seen and advice.items[1].error == {"test_set": "test", "metric": "wer", "value": 10.0}
    assert "WER 10 on test" in advice.items[1].reason and "(mls)" in advice.items[1].reason
    owsm = advice.items[4]
    assert "language token <spa>" in owsm.reason and "1.02B params" in owsm.reason and "6 languages" in owsm.reason


def test_max_params_leaves_out_only_models_known_to_be_bigger(fixture_catalog: Catalog) -> None:
    tiers = ranked(fixture_catalog, "spa", max_params=parse_size("400M"))
    assert (2, "espnet/owsm_big") not in tiers and (2, "espnet/owsm_small") in tiers
    assert (1, "a/spa_quiet") in tiers  # size unknown: kept, and the reason says so
    assert "size unknown" in recommend(fixture_catalog, RecommendOptions("spa")).items[3].reason


def test_task_and_per_tier_limit(fixture_catalog: Catalog) -> None:
    assert ranked(fixture_catalog, "es", task="tts") == [(1, "a/tts_spa")]
    assert ranked(fixture_catalog, "es", per_tier=1) == [(1, "a/eng_spa"), (2, "espnet/owsm_big")]
    tts = recommend(fixture_catalog, RecommendOptions("it", task="tts"))  # no S2T model to learn a new token
    assert [(i.tier, i.entry.repo_id) for i in tts.items] == [(3, "a/tts_spa")] and "S2T" not in tts.note


def test_malay_through_owsms_mas_token(fixture_catalog: Catalog) -> None:
    advice = recommend(fixture_catalog, RecommendOptions("ms"))
    assert [i.entry.repo_id for i in advice.items][:2] == ["espnet/owsm_big", "espnet/owsm_small"]
    assert "language token <mas>" in advice.items[0].reason
    assert advice.items[0].command.endswith("--lang msa")


def test_a_language_never_seen(fixture_catalog: Catalog) -> None:
    """Italian: no model knows it. The S2T models can learn it as a new token; then the same family (Portuguese and
    Spanish are Romance) before the same script; and the note says plainly that it was never seen."""
    advice = recommend(fixture_catalog, RecommendOptions("it"))
    assert not advice.seen and "Italian (ita) was never seen" in advice.note
    tiers = [(i.tier, i.entry.repo_id) for i in advice.items]
    assert tiers[:2] == [(3, "espnet/owsm_big"), (3, "espnet/owsm_small")]
    assert "new language token <ita>" in advice.items[0].reason
    kin = advice.items[2:]
    # Most Romance languages first (FLEURS: Spanish and Portuguese), then by reported error; at most 5 a tier.
    assert [i.entry.repo_id for i in kin] == ["a/fleurs", "a/eng_spa", "a/por", "a/spa_good", "a/spa_bad"]
    assert all(i.tier == 3 and "same family (Romance)" in i.reason for i in kin)
    assert "trained on Spanish, Portuguese" in kin[0].reason or "trained on Portuguese, Spanish" in kin[0].reason
    assert all("--vocab bpe:500" in i.command for i in kin if i.entry.task == "asr")


def test_unknown_family_and_script_says_so(fixture_catalog: Catalog) -> None:
    advice = recommend(fixture_catalog, RecommendOptions("top"))
    assert [i.tier for i in advice.items] == [3, 3]
    assert "family and script are not in the language table" in advice.note


def test_what_cannot_be_recommended_is_one_sentence(fixture_catalog: Catalog) -> None:
    with pytest.raises(CatalogError, match="no single language"):
        recommend(fixture_catalog, RecommendOptions("mul"))
    with pytest.raises(CatalogError, match="raise --max-params"):
        recommend(fixture_catalog, RecommendOptions("top", max_params=1000))
    with pytest.raises(CatalogError, match="not an ISO 639 language code"):
        recommend(fixture_catalog, RecommendOptions("xq"))


# --- the commands ----------------------------------------------------------------------------------------------


def finetune_params(args: list[str]) -> dict[str, object]:
    """Parse `args` with `espzoo finetune`'s own options (no run): what the command accepts."""
    command = typer.main.get_command(app).commands["finetune"]  # type: ignore[attr-defined]
    with command.make_context("finetune", args) as ctx:
        return dict(ctx.params)


def test_every_printed_command_is_one_finetune_accepts(fixture_catalog: Catalog) -> None:
    items = [*recommend(fixture_catalog, RecommendOptions("es")).items,
             *recommend(fixture_catalog, RecommendOptions("it")).items]
    for item in items:
        argv = shlex.split(item.command)
        assert argv[:3] == ["espzoo", "finetune", item.entry.repo_id]
        params = finetune_params(argv[2:])
        assert params["model"] == item.entry.repo_id and str(params["out"]).startswith("exp/")
        # S2T models are fine-tuned with --lang (ISO 639-3); ASR models take none.
        expected = argv[argv.index("--lang") + 1] if item.entry.task == "s2t" else None
        assert params["lang"] == expected and expected in (None, "spa", "ita")


def test_command_names_the_language_for_s2t_only(fixture_catalog: Catalog) -> None:
    entry = fixture_catalog.get("espnet/owsm_small")
    spa = recommend(fixture_catalog, RecommendOptions("es")).language
    assert finetune_command(entry, spa) == (
        "espzoo finetune espnet/owsm_small --train data/train --valid data/dev --out exp/spa_owsm_small --lang spa")
    assert "--lang" not in finetune_command(fixture_catalog.get("a/spa_good"), spa)


# --- CLI and JSON schema -------------------------------------------------------------------------------------


@pytest.fixture()
def fixture_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ESPZOO_HOME", str(tmp_path))  # the user catalog takes precedence over the shipped one
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump({"entries": FIXTURE}))
    return tmp_path


def test_json_schema(fixture_home: Path) -> None:
    result = runner.invoke(app, ["recommend", "--lang", "Spanish", "--max-params", "400M", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"language", "task", "max_params", "seen", "note", "recommendations"}
    assert data["language"] == {"code": "spa", "alpha2": "es", "name": "Spanish", "owsm_token": "<spa>"}
    assert data["task"] == "asr" and data["max_params"] == 400_000_000 and data["seen"] is True
    keys = {"rank", "tier", "tier_name", "repo_id", "task", "params", "vocab_size", "lang_count", "error", "reason",
            "command"}
    recs = data["recommendations"]
    assert [r["rank"] for r in recs] == list(range(1, len(recs) + 1))
    for rec in recs:
        assert set(rec) == keys and rec["tier"] in (1, 2, 3) and rec["command"].startswith("espzoo finetune ")
        assert rec["params"] is None or isinstance(rec["params"], int)
        assert rec["error"] is None or set(rec["error"]) == {"test_set", "metric", "value"}
    small = next(r for r in recs if r["repo_id"] == "espnet/owsm_small")
    assert small["params"] == 367_000_000 and small["vocab_size"] == 50000 and small["lang_count"] == 6
    assert small["tier_name"] == "multilingual, covers Spanish"


def test_table_output_and_errors(fixture_home: Path) -> None:
    shown = runner.invoke(app, ["recommend", "--lang", "it"], env={"COLUMNS": "300"})
    assert shown.exit_code == 0, shown.output
    assert "Italian (ita) was never seen" in shown.output and "new language token <ita>" in shown.output
    assert "espzoo finetune espnet/owsm_big --train data/train --valid data/dev --out exp/ita_owsm_big --lang ita" \
        in shown.output
    for argv, says in [
        (["--lang", "klingonx-9"], "no language is called"),
        (["--lang", "zz"], "'zz' is not an ISO 639 language code"),
        (["--lang", "es", "--max-params", "big"], "--max-params 'big' is not a size"),
        (["--lang", "mul"], "no single language"),
    ]:
        bad = runner.invoke(app, ["recommend", *argv])
        assert bad.exit_code == 1 and says in bad.output and "Traceback" not in bad.output
        assert bad.output.count("\n") == 1


# --- the shipped catalog: multilingual entries list all their languages ------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> Catalog:
    return Catalog.load(shipped_catalog_path())


def test_owsm_lists_its_languages_in_iso_639_3(shipped: Catalog) -> None:
    owsm = shipped.get("espnet/owsm_v3.1_ebf_small")
    assert owsm is not None and len(owsm.languages) == 150  # 151 tokens; <lga> and <lug> both hold Luganda
    assert {"spa", "msa", "fry", "dyu", "lug", "nep", "npi"} <= set(owsm.languages)
    assert not {"mas", "lga", "frr", "dgd"} & set(owsm.languages)  # the tokens' ISO names are not what they hold
    assert owsm.params == 367_000_000 and owsm.vocab_size == 50000 and owsm.language_token == "iso639-3"
    assert owsm.lang_evidence == "family_shared" and owsm.family == "owsm_v3.1" and owsm.train_hours == 180_000
    assert all(len(code) == 3 for e in shipped.entries for code in e.languages)  # ISO 639-3 everywhere


@pytest.mark.parametrize("lang", ["es", "spa", "Spanish", "espanol", "ms", "malay", "ne", "npi", "sw", "swh"])
def test_multilingual_models_match_every_language_they_cover(shipped: Catalog, lang: str) -> None:
    found = {h.entry.repo_id for h in shipped.search("", lang=lang, limit=0)}
    assert {"espnet/owsm_v3.1_ebf", "espnet/owsm_ctc_v4_1B", "espnet/owsm_v4_base_102M"} <= found


def test_totonac_and_corpus_evidence(shipped: Catalog) -> None:
    totonac = shipped.get("espnet/ftshijt_espnet2_asr_totonac_transformer")
    assert totonac is not None and totonac.languages == ["top"] and totonac.lang_evidence == "name_inferred"
    assert [h.entry.repo_id for h in shipped.search("", lang="top", limit=0)] == [totonac.repo_id]
    respin = shipped.get("SpireLab/spire_respin_baselines_espnet")  # RESPIN's own short codes, not 639-1
    assert respin is not None and {"bho", "hne", "mag", "mai"} <= set(respin.languages)
    assert not {"cha", "mlg", "mlt"} & set(respin.languages)


def test_search_shows_language_count_params_and_vocabulary() -> None:
    table = runner.invoke(app, ["search", "owsm_v4", "--task", "s2t"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "150 langs" in table.output and "370M" in table.output
    rows = json.loads(runner.invoke(app, ["search", "--lang", "es", "--json", "--limit", "0"]).stdout)
    owsm = next(r for r in rows if r["repo_id"] == "espnet/owsm_v4_small_370M")
    assert owsm["params"] == 370_000_000 and owsm["vocab_size"] == 50000 and owsm["lang_count"] == 150
    assert "spa" in owsm["languages"]
    small = json.loads(runner.invoke(app, ["search", "--lang", "es", "--max-params", "400M", "--json", "-n", "0"])
                       .stdout)
    assert small and all(r["params"] is None or r["params"] <= 400_000_000 for r in small)
    assert "espnet/owsm_v4_small_370M" in {r["repo_id"] for r in small}
    assert "espnet/owsm_v4_medium_1B" not in {r["repo_id"] for r in small}
    info = json.loads(runner.invoke(app, ["info", "espnet/owsm_v4_medium_1B", "--json"]).stdout)
    assert info["params"] == 1_020_000_000 and info["tokens"]["size"] == 50000 and len(info["languages"]) == 150
    shown = runner.invoke(app, ["info", "espnet/owsm_v4_medium_1B"], env={"COLUMNS": "200"})
    assert "1.02B (1,020,000,000)" in shown.output and "150: abk" in shown.output


def test_search_with_a_language_that_is_none_fails_clearly() -> None:
    bad = runner.invoke(app, ["search", "--lang", "zq"])
    assert bad.exit_code == 1 and "'zq' is not an ISO 639 language code" in bad.output
    none = runner.invoke(app, ["search", "--lang", "Maasai"])
    assert none.exit_code == 1 and "recommend --lang mas" in none.output


def test_recommend_on_the_shipped_catalog() -> None:
    data = json.loads(runner.invoke(app, ["recommend", "--lang", "top", "--max-params", "400M", "--json"]).stdout)
    recs = data["recommendations"]
    assert recs[0]["repo_id"] == "espnet/ftshijt_espnet2_asr_totonac_transformer" and recs[0]["tier"] == 1
    learners = [r for r in recs if r["tier"] == 3]
    assert learners and all(r["command"].endswith("--lang top") and (r["params"] or 0) <= 400_000_000
                            for r in learners)
    assert "new language token <top>" in learners[0]["reason"]


# --- catalog refresh keeps what only the shipped tables know -----------------------------------------------------


def test_refresh_merge_keeps_languages_sizes_and_evidence(shipped: Catalog) -> None:
    base = [{k: v for k, v in e.to_dict().items() if v not in (None, [], {})} for e in shipped.entries]
    updates = [
        {"repo_id": "espnet/owsm_v3.1_ebf", "languages": ["multilingual"], "license": "cc-by-4.0", "status": "hub"},
        {"repo_id": "espnet/bn_openslr53", "languages": ["bn", "en"], "status": "hub"},
        {"repo_id": "me/new", "task": "asr", "languages": ["es", "klingon-xx"], "status": "hub"},
    ]
    merged, added, updated = merge_entries(base, updates)
    by_id = {e["repo_id"]: e for e in merged}
    owsm = by_id["espnet/owsm_v3.1_ebf"]
    assert len(owsm["languages"]) == 150 and owsm["params"] == 1_020_000_000 and owsm["license"] == "cc-by-4.0"
    assert owsm["lang_evidence"] == "demo_list" and owsm["language_token"] == "iso639-3"
    assert owsm["family"] == "owsm_v3.1" and owsm["tokens"]["size"] == 50000
    assert by_id["espnet/bn_openslr53"]["languages"] == ["ben", "eng"]  # the card adds, as ISO 639-3
    assert by_id["espnet/bn_openslr53"]["lang_evidence"] == "corpus_inferred"
    assert by_id["me/new"]["languages"] == ["spa"]  # what is no language code is dropped from a card
    assert added == 1 and updated == 2


def test_sizes_read_and_written() -> None:
    assert parse_size("400M") == 400_000_000 and parse_size("1.5B") == 1_500_000_000
    assert parse_size("102k") == 102_000 and parse_size("367000000") == 367_000_000 and parse_size("2g") == 2 * 10**9
    with pytest.raises(CatalogError, match="not a size"):
        parse_size("four hundred")
    assert size_label(367_000_000) == "367M" and size_label(1_020_000_000) == "1.02B" and size_label(None) is None


def test_free_text_names_a_language_models_for_it_first(shipped: Catalog) -> None:
    found = [h.entry for h in shipped.search("español", limit=0)]
    assert found and all("spa" in e.languages for e in found)
    mono = [i for i, e in enumerate(found) if len(e.languages) <= 3]
    multi = [i for i, e in enumerate(found) if len(e.languages) > 3]
    assert mono and multi and max(mono) < min(multi)  # a model for Spanish before one covering it among many


def test_help_lists_recommend_first() -> None:
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and result.output.index("recommend") < result.output.index("search")
    sub = runner.invoke(app, ["recommend", "--help"], env={"COLUMNS": "200"})
    assert sub.exit_code == 0 and "--max-params" in sub.output and "Example: espzoo recommend --lang es" in sub.output
