"""Extract data/iso639-3.tsv: every ISO 639-3 code with its 639-1/639-2B codes, English name, scope and type
(pycountry's copy of the SIL table), plus family, scripts and other English names where Wiktionary's language list
(as shipped in the `language_data` package) knows them.

    pip install pycountry==26.2.16 language-data==1.4.0   # tools for this script only, not espzoo dependencies
    python scripts/extract_languages.py                    # rewrites data/iso639-3.tsv

Run it only to move to newer releases of those packages; scripts/build_catalog.py reads the TSV it writes.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ["iso639_3", "iso639_1", "iso639_2b", "name", "scope", "type", "family", "scripts", "other_names"]


def main() -> int:
    import language_data
    import pycountry

    iso = json.loads((Path(pycountry.__file__).parent / "databases" / "iso639-3.json").read_text(encoding="utf-8"))
    wikt: dict[str, list[str]] = {}
    wikt_file = Path(language_data.__file__).parent / "data" / "wiktionary" / "codes-en.csv"
    with wikt_file.open(encoding="utf-8") as fh:
        for row in csv.reader(fh, delimiter="\t"):
            if row:
                wikt[row[0]] = row + [""] * (5 - len(row))
    rows = []
    for lang in iso["639-3"]:
        code, alpha2 = lang["alpha_3"], lang.get("alpha_2", "")
        w = wikt.get(alpha2) or wikt.get(code) or [""] * 5
        # Wiktionary writes some scripts with a language prefix ("fa-Arab"): keep the ISO 15924 part.
        scripts = " ".join(dict.fromkeys(s.strip().split("-")[-1] for s in w[3].split(",") if s.strip()))
        others = {n.strip() for n in w[4].split(",") if n.strip()}
        for extra in (lang.get("common_name"), w[1]):
            if extra and extra != lang["name"]:
                others.add(extra)
        rows.append([code, alpha2, lang.get("bibliographic", ""), lang["name"], lang["scope"], lang["type"],
                     w[2].strip(), scripts, "; ".join(sorted(others))])
    out = ROOT / "data" / "iso639-3.tsv"
    with out.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    print(f"wrote {out} ({len(rows)} codes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
