"""Build catalog.yaml from the source table data/espnet_hub_repos.tsv.

    python scripts/build_catalog.py                 # rewrites ./catalog.yaml
    python scripts/build_catalog.py --check         # fails when catalog.yaml is out of date

Every row of the table becomes one entry (ASR rows first); `espzoo catalog refresh` later merges
what the Hub says on top of these entries in the user catalog.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import yaml
from espzoo.catalog import entry_from_dict, entry_from_row

ROOT = Path(__file__).resolve().parent.parent
TASK_ORDER = {"asr": 0, "s2t": 1}

HEADER = """\
# The ESPnet models on the Hugging Face Hub, one entry per repo.
# Built by scripts/build_catalog.py from data/espnet_hub_repos.tsv (see data/SOURCES.md); do not edit by hand.
# Fields: repo_id, task, languages (ISO 639), corpus, recipe, architecture, tokens, sample_rate,
# results (WER/CER in percent), license, source (the evidence), status, confidence, train_config, notes.
"""


def build(table: Path) -> str:
    with table.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    entries = [entry_from_row(row) for row in rows]
    entries.sort(key=lambda e: (TASK_ORDER.get(e["task"], 2), e["task"], e["repo_id"].lower()))
    for i, entry in enumerate(entries):  # the builder's output must pass the loader's schema
        entry_from_dict(entry, f"entry {i + 1}")
    body = yaml.safe_dump({"entries": entries}, sort_keys=False, allow_unicode=True, width=120)
    return HEADER + body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=ROOT / "data" / "espnet_hub_repos.tsv")
    parser.add_argument("--out", type=Path, default=ROOT / "catalog.yaml")
    parser.add_argument("--check", action="store_true", help="only check that --out is up to date")
    args = parser.parse_args()
    text = build(args.table)
    if args.check:
        if not args.out.is_file() or args.out.read_text(encoding="utf-8") != text:
            print(f"{args.out} is out of date; run python scripts/build_catalog.py", file=sys.stderr)
            return 1
        return 0
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(args.out)
    print(f"wrote {args.out} ({text.count('- repo_id:')} entries)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
