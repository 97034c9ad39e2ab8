"""The catalog: built from the source table, validated, searched, and served by `search`/`info`."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from espzoo.catalog.catalog import Catalog
from espzoo.catalog.entries import shipped_catalog_path
from espzoo.catalog.rows import entry_from_row, parse_architecture, parse_languages, parse_results, parse_tokens
from espzoo.cli.main import app
from espzoo.errors import CatalogError
from espzoo.repo import parse_sample_rate

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "data" / "espnet_hub_repos.tsv"
S2T_TABLE = ROOT / "data" / "s2t_models.tsv"
runner = CliRunner()


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(ROOT / "catalog.yaml")


def table_rows(table: Path = TABLE) -> list[dict[str, str]]:
    with table.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


# --- build -------------------------------------------------------------------------------------


def test_shipped_catalog_is_up_to_date_with_the_table() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_catalog.py"), "--check"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_every_table_row_is_an_entry(catalog: Catalog) -> None:
    rows = table_rows()
    extra = {r["repo_id"] for r in table_rows(S2T_TABLE)} - {r["repo_id"] for r in rows}
    assert extra and all(e.startswith("espnet/owls_") for e in extra)  # OWLS: only the multilingual table has them
    assert len(catalog) == len(rows) + len(extra) and len(rows) == len({r["repo_id"] for r in rows})
    for row in rows:
        entry = catalog.get(row["repo_id"])
        assert entry is not None and entry.task == row["task"]
    asr = [e for e in catalog.entries if e.task == "asr"]
    assert len(asr) == sum(r["task"] == "asr" for r in rows) > 150
    assert catalog.entries[0].task == "asr"  # ASR rows first: they are the heart


def test_shipped_catalog_is_found_inside_the_package() -> None:
    path = shipped_catalog_path()
    assert path.is_file() and path.read_bytes() == (ROOT / "catalog.yaml").read_bytes()


def test_row_parsers() -> None:
    assert parse_languages("en;zh") == ["en", "zh"]
    assert parse_languages("en-bn") == ["en", "bn"]
    assert parse_languages("zh-TW") == ["zh-TW"]
    assert parse_languages("multilingual") == ["mul"]
    assert parse_tokens("bpe5000") == {"type": "bpe", "size": 5000}
    assert parse_tokens("char") == {"type": "char"}
    assert parse_tokens("whisper_multilingual") == {"type": "whisper_multilingual"}
    assert parse_sample_rate("16000") == 16000
    assert parse_sample_rate("44khz (as named)") == 44100
    assert parse_sample_rate("22k (as named)") == 22050
    assert parse_sample_rate("") is None
    assert parse_architecture("conformer,wavlm") == {
        "encoder": "conformer", "frontend": "wavlm", "tags": ["conformer", "wavlm"]
    }
    assert parse_architecture("e_branchformer,transducer")["decoder"] == "transducer"
    assert parse_results("test=31.2", "dev=4.3;test=4.6") == [
        {"test_set": "test", "metric": "wer", "value": 31.2},
        {"test_set": "dev", "metric": "cer", "value": 4.3},
        {"test_set": "test", "metric": "cer", "value": 4.6},
    ]


def test_entry_from_row_keeps_the_evidence() -> None:
    row = next(r for r in table_rows() if r["repo_id"] == "espnet/bn_openslr53")
    entry = entry_from_row(row)
    assert entry["languages"] == ["ben"] and entry["tokens"] == {"type": "bpe", "size": 1000}
    assert entry["source"] == row["sources"] and entry["status"] == row["status"]
    assert entry["lang_evidence"] == row["lang_evidence"] == "corpus_inferred"  # how the language was found stays


# --- schema ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"repo_id": "no-slash", "task": "asr"}, "field 'repo_id'"),
        ({"repo_id": "a/b"}, "field 'task' is required"),
        ({"repo_id": "a/b", "task": "asr", "languages": "en"}, "field 'languages'"),
        ({"repo_id": "a/b", "task": "asr", "sample_rate": "16k"}, "field 'sample_rate'"),
        ({"repo_id": "a/b", "task": "asr", "results": [{"test_set": "t", "metric": "wer"}]}, "field 'results'"),
        ({"repo_id": "a/b", "task": "asr", "colour": "red"}, "unknown field(s) colour"),
    ],
)
def test_malformed_catalog_names_entry_and_field(tmp_path: Path, entry: dict, message: str) -> None:
    good = {"repo_id": "x/good", "task": "asr", "languages": ["en"]}
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"entries": [good, entry]}))
    with pytest.raises(CatalogError) as err:
        Catalog.load(path)
    assert "entry 2" in str(err.value) and message in str(err.value)


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"entries": [{"repo_id": "a/b", "task": "asr"}, {"repo_id": "A/B", "task": "tts"}]}))
    with pytest.raises(CatalogError, match="appears twice"):
        Catalog.load(path)


def test_user_catalog_overrides_the_shipped_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESPZOO_HOME", str(tmp_path))
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump({"entries": [{"repo_id": "me/mine", "task": "asr"}]}))
    assert [e.repo_id for e in Catalog.load().entries] == ["me/mine"]
    # An edit is seen at once: the parse cache is keyed by size and mtime.
    (tmp_path / "catalog.yaml").write_text(
        yaml.safe_dump({"entries": [{"repo_id": "me/mine", "task": "asr"}, {"repo_id": "me/other", "task": "tts"}]})
    )
    assert len(Catalog.load()) == 2


def test_malformed_user_catalog_is_one_clear_cli_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESPZOO_HOME", str(tmp_path))
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump({"entries": [{"repo_id": "me/mine", "task": 3}]}))
    result = runner.invoke(app, ["search", "x"])
    assert result.exit_code == 1
    assert "me/mine" in result.output and "field 'task'" in result.output


# --- search ------------------------------------------------------------------------------------


def ids(hits) -> list[str]:  # noqa: ANN001
    return [h.entry.repo_id for h in hits]


def test_exact_id_ranks_first(catalog: Catalog) -> None:
    assert ids(catalog.search("espnet/bn_openslr53"))[0] == "espnet/bn_openslr53"
    assert ids(catalog.search("bn_openslr53"))[0] == "espnet/bn_openslr53"


@pytest.mark.parametrize("query", ["bengali", "bangla", "bn", "bengli", "Bengali"])
def test_language_by_code_name_and_typo(catalog: Catalog, query: str) -> None:
    found = ids(catalog.search(query, task="asr"))
    assert "espnet/bn_openslr53" in found[:5]
    for repo in found:
        assert "ben" in catalog.get(repo).languages or "bn" in repo.lower()


def test_facets_filter(catalog: Catalog) -> None:
    hits = catalog.search("", task="asr", lang="ja", limit=0)
    assert hits and all(h.entry.task == "asr" and "jpn" in h.entry.languages for h in hits)
    conformers = catalog.search("librispeech", arch="conformer", limit=0)
    assert conformers and all(h.entry.architecture.get("encoder") == "conformer" for h in conformers)
    bpe = catalog.search("", tokens="bpe5000", limit=0)
    assert bpe and all(h.entry.tokens == {"type": "bpe", "size": 5000} for h in bpe)
    assert all(h.entry.corpus == "kathbath" for h in catalog.search("", corpus="kathbath", limit=0))


def test_limit_zero_means_all(catalog: Catalog) -> None:
    assert len(catalog.search("", limit=0)) == len(catalog)
    assert len(catalog.search("", limit=3)) == 3


def test_nonsense_finds_nothing(catalog: Catalog) -> None:
    assert catalog.search("qqqzzzxxy") == []


def test_facet_counts(catalog: Catalog) -> None:
    facets = catalog.facets()
    assert facets["task"]["asr"] == sum(e.task == "asr" for e in catalog.entries)
    assert facets["language"]["eng"] > facets["language"]["ben"] > 0


def test_suggest_close_ids(catalog: Catalog) -> None:
    assert "espnet/bn_openslr53" in catalog.suggest("espnet/bn_openslr35")
    assert "espnet/bn_openslr53" in catalog.suggest("bn_opnslr53")


# --- CLI ---------------------------------------------------------------------------------------


def test_search_json_output() -> None:
    result = runner.invoke(app, ["search", "bengali", "--task", "asr", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert "bengali" in rows[0]["repo_id"]  # a name match ranks above metadata matches
    assert "espnet/bn_openslr53" in [r["repo_id"] for r in rows[:5]]
    assert {"repo_id", "task", "languages", "corpus"} <= set(rows[0])


def test_search_table_output() -> None:
    result = runner.invoke(app, ["search", "bn_openslr53"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "espnet/bn_openslr53" in result.output


def test_search_without_match_fails_clearly() -> None:
    result = runner.invoke(app, ["search", "qqqzzzxxy"])
    assert result.exit_code == 1 and "no catalog entry matches" in result.output


def test_info_and_suggestions() -> None:
    result = runner.invoke(app, ["info", "espnet/bn_openslr53", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["corpus"] == "bn_openslr53" and data["results"]
    missing = runner.invoke(app, ["info", "espnet/bn_openslr35"])
    assert missing.exit_code == 1 and "Did you mean espnet/bn_openslr53" in missing.output


def test_version_and_help() -> None:
    assert runner.invoke(app, ["--version"]).output.strip() == "espzoo 0.1.0"
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for command in ("search", "info"):
        assert command in result.output
    assert "Example: espzoo search" in result.output


def console_script() -> str:
    script = Path(sys.executable).with_name("espzoo")
    assert script.exists(), "the console script is installed with the package"
    return str(script)


def test_console_script_subprocess() -> None:
    done = subprocess.run(
        [console_script(), "search", "--lang", "bangla", "--json", "--limit", "0"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert all("ben" in row["languages"] for row in json.loads(done.stdout))


@pytest.mark.parametrize("argv", [
    ["search", "bengali"], ["--help"], ["info", "espnet/bn_openslr53"], ["search", "--lang", "spansh"],
    ["recommend", "--lang", "es"], ["recommend", "--lang", "top", "--json"], ["recommend", "--lang", "xx"],
])
def test_fast_commands_do_not_import_torch_or_espnet(argv: list[str]) -> None:
    probe = (
        "import sys\n"
        "from espzoo.cli.main import app\n"
        f"try:\n    app({argv!r})\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'torchaudio', 'espnet', 'espnet2'})\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert "HEAVY=\n" in done.stdout, done.stdout[-500:] + done.stderr[-500:]
