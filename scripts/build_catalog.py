"""Build catalog.yaml and the language table zoo/languages.tsv from the source tables in data/.

    python scripts/build_catalog.py                 # rewrites ./catalog.yaml and zoo/languages.tsv
    python scripts/build_catalog.py --check         # fails when either is out of date

Sources (see data/SOURCES.md and data/S2T_SOURCES.md):
- espnet_hub_repos.tsv: one entry per row (ASR rows first); languages become ISO 639-3.
- s2t_models.tsv: multilingual models (OWSM, OWSM-CTC, POWSM, FLEURS, OWLS, ML-SUPERB) laid over those rows: every
  language, params, vocabulary, family, training hours, language-token form; repos the hub table lacks are added.
- language_overrides.tsv: rows whose language cell is not ISO 639 (RESPIN's own short names), with the evidence.
- iso639-3.tsv, language_aliases.tsv, iso639.tsv, macrolanguages.tsv: the language table.
`espzoo catalog refresh` later merges what the Hub says on top of these entries in the user catalog.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import yaml

from espzoo.catalog.entries import entry_from_dict
from espzoo.catalog.languages import TABLE_COLUMNS, TOKEN_HOLDS, Languages, name_keys
from espzoo.catalog.rows import entry_from_row, overlay_s2t, s2t_facts

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
TASK_ORDER = {"asr": 0, "s2t": 1}

HEADER = """\
# The ESPnet models on the Hugging Face Hub, one entry per repo.
# Built by scripts/build_catalog.py from data/espnet_hub_repos.tsv and data/s2t_models.tsv (see data/SOURCES.md,
# data/S2T_SOURCES.md); do not edit by hand.
# Fields: repo_id, task, languages (ISO 639-3), corpus, recipe, architecture, tokens (type, vocabulary size),
# sample_rate, results (WER/CER in percent), license, source (the evidence), status, confidence, train_config, notes,
# params, family, train_hours, lang_evidence (how the languages were found), language_token (iso639-3: <spa>).
"""


def read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def language_rows(data: Path) -> list[dict[str, str]]:
    """The language table's rows: every ISO 639-3 code with its names (ISO's, Wiktionary's, our aliases), family,
    scripts and the codes of the same language (macrolanguage and its usual member; OWSM's token pairs)."""
    rows = {r["iso639_3"]: r for r in read_tsv(data / "iso639-3.tsv")}
    names: dict[str, list[str]] = {c: [n for n in r["other_names"].split("; ") if n] for c, r in rows.items()}
    aliases = [a for a in read_tsv(data / "language_aliases.tsv") if a["use"] in ("name", "both")]
    for alias in aliases:
        names[alias["iso639_3"]].append(alias["alias"])
    same: dict[str, set[str]] = {c: set() for c in rows}
    pairs = [(m["macro"], m["individual"]) for m in read_tsv(data / "macrolanguages.tsv")]
    for quirk in read_tsv(data / "iso639.tsv"):  # OWSM's token pairs; the mislabelled tokens are read at build
        pairs += [(quirk["iso639_3"], c) for c in quirk["also_matches"].split()
                  if len(c) == 3 and not {c, quirk["iso639_3"]} & set(TOKEN_HOLDS)]
    for a, b in pairs:
        same[a].add(b)
        same[b].add(a)
    aliased = {a["iso639_3"] for a in aliases}
    rows_out = [{
        "code": code, "alpha2": r["iso639_1"], "alpha2b": r["iso639_2b"], "name": r["name"], "family": r["family"],
        "scripts": r["scripts"], "names": ";".join(dict.fromkeys(names[code])), "same_as": " ".join(sorted(same[code])),
        "major": "1" if r["iso639_1"] or code in aliased else "0",
    } for code, r in rows.items()]
    keys = name_keys(rows_out)
    return [{**row, "keys": ";".join(keys[row["code"]])} for row in rows_out]


def table_rows(rows: list[dict[str, str]], used: set[str] = frozenset()) -> list[list[str]]:
    """The rows as the shipped table holds them; `major` also marks every language a catalog entry lists (typo
    search looks there first)."""
    return [[("1" if row["major"] == "1" or row["code"] in used else "0") if c == "major" else row[c]
             for c in TABLE_COLUMNS] for row in rows]


def build_entries(data: Path, languages: Languages) -> list[dict]:
    aliases = read_tsv(data / "language_aliases.tsv")
    infer = {a["alias"]: a["iso639_3"] for a in aliases if a["use"] in ("infer", "both")}
    fixes = {f["repo_id"]: f for f in read_tsv(data / "language_overrides.tsv")}
    entries = {}
    for row in read_tsv(data / "espnet_hub_repos.tsv"):
        fix = fixes.pop(row["repo_id"], None)
        if fix is not None:  # a language cell that is not ISO 639: the override's codes, and why
            row = {**row, "language": ";".join(fix["languages"].split()), "lang_evidence": "override",
                   "notes": f"{row['notes']} | {fix['evidence']}" if row["notes"] else fix["evidence"]}
        entries[row["repo_id"]] = entry_from_row(row, infer, languages)
    if fixes:
        raise SystemExit(f"language_overrides.tsv names repos the hub table lacks: {', '.join(fixes)}")
    for row in read_tsv(data / "s2t_models.tsv"):
        entries[row["repo_id"]] = overlay_s2t(entries.get(row["repo_id"]), row["repo_id"], s2t_facts(row, languages))
    out = sorted(entries.values(), key=lambda e: (TASK_ORDER.get(e["task"], 2), e["task"], e["repo_id"].lower()))
    for i, entry in enumerate(out):  # the builder's output must pass the loader's schema
        entry_from_dict(entry, f"entry {i + 1}")
    return out


def build(data: Path) -> tuple[str, str]:
    """(catalog.yaml text, languages.tsv text)."""
    rows = language_rows(data)
    entries = build_entries(data, Languages("\t".join(row) for row in table_rows(rows)))
    used = {code for entry in entries for code in entry.get("languages", [])}
    body = yaml.safe_dump({"entries": entries}, sort_keys=False, allow_unicode=True, width=120)
    lines = ["\t".join(TABLE_COLUMNS), *("\t".join(row) for row in table_rows(rows, used))]
    return HEADER + body, "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "catalog.yaml")
    parser.add_argument("--languages-out", type=Path, default=ROOT / "zoo" / "languages.tsv")
    parser.add_argument("--check", action="store_true", help="only check that the outputs are up to date")
    args = parser.parse_args()
    outputs = dict(zip((args.out, args.languages_out), build(args.data), strict=True))
    if args.check:
        stale = [str(p) for p, text in outputs.items() if not p.is_file() or p.read_text(encoding="utf-8") != text]
        if stale:
            print(f"{', '.join(stale)} out of date; run python scripts/build_catalog.py", file=sys.stderr)
            return 1
        return 0
    for path, text in outputs.items():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    print(f"wrote {args.out} ({outputs[args.out].count('- repo_id:')} entries) and {args.languages_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
