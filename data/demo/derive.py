#!/usr/bin/env python3
"""Derives data/demo/metrics.csv (the demo organizations' daily energy rows)
from the development data set described in data/demo/README.md.

Usage: python3 data/demo/derive.py [--source DIR] [--out FILE]

Only the Python standard library is used, and the output is deterministic:
running it again on the same inputs gives the same bytes.
"""

import argparse
import csv
import datetime as dt
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Each country stands in for one large organization: its national generation
# is the "energy" activity and the life-cycle CO2e of that generation its
# emissions. The last two years of the source (2019-2020) are kept.
COUNTRIES = [
    ("DE", "Germany national grid"),
    ("ES", "Spain national grid"),
    ("FR", "France national grid"),
    ("GB", "Great Britain national grid"),
]
COUNTRY_FIRST_DAY = dt.date(2019, 1, 1)
COUNTRY_LAST_DAY = dt.date(2020, 12, 31)

# One organization with one day less than the 180 days of history a model
# needs, so a cycle shows a skipped job: Italy's last 179 days.
SHORT_COUNTRY = ("IT", "Italy national grid (179 days)")
SHORT_DAYS = 179

# The household (Sceaux, near Paris): its last two years in the source.
HOUSEHOLD = "Sceaux household"
HOUSEHOLD_DAYS = 730
# The household data has no emission factor (it predates the grid data by a
# decade), so each day is paired with the French grid intensity of the same
# calendar day ten years later.
HOUSEHOLD_FACTOR_COUNTRY = "FR"
HOUSEHOLD_FACTOR_YEARS_LATER = 10

HEADER = ["organization", "date", "category", "value", "unit", "co2e_kg", "grid_factor"]


def kg_per_kwh(grams_per_kwh: str) -> str:
    """g/kWh -> kg/kWh; the source has one decimal, so four decimals are exact."""
    return f"{float(grams_per_kwh) / 1000:.4f}".rstrip("0").rstrip(".")


def read_grid(source: Path):
    with open(source / "entsoe_daily_dev.csv", newline="") as f:
        return [
            {**row, "date": dt.date.fromisoformat(row["date"])}
            for row in csv.DictReader(f)
        ]


def country_rows(grid, country: str, name: str, first: dt.date, last: dt.date):
    for row in grid:
        if row["country"] == country and first <= row["date"] <= last:
            yield [
                name,
                row["date"].isoformat(),
                "energy",
                row["generation_mwh"],
                "MWh",
                str(int(row["co2e_t"]) * 1000),
                kg_per_kwh(row["grid_intensity_g_per_kwh"]),
            ]


def household_rows(source: Path, grid):
    factor = {
        row["date"]: row["grid_intensity_g_per_kwh"]
        for row in grid
        if row["country"] == HOUSEHOLD_FACTOR_COUNTRY
    }
    with open(source / "uci_household_power_daily.csv", newline="") as f:
        days = list(csv.DictReader(f))[-HOUSEHOLD_DAYS:]
    for row in days:
        day = dt.date.fromisoformat(row["date"])
        paired = day.replace(year=day.year + HOUSEHOLD_FACTOR_YEARS_LATER)
        kg_kwh = float(factor[paired]) / 1000
        yield [
            HOUSEHOLD,
            row["date"],
            "energy",
            row["kwh_total"],
            "kWh",
            f"{float(row['kwh_total']) * kg_kwh:.4f}",
            kg_per_kwh(factor[paired]),
        ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "data" / "demo" / "metrics.csv")
    args = parser.parse_args()

    grid = read_grid(args.source)
    rows = []
    for code, name in COUNTRIES:
        rows.extend(country_rows(grid, code, name, COUNTRY_FIRST_DAY, COUNTRY_LAST_DAY))
    short_first = COUNTRY_LAST_DAY - dt.timedelta(days=SHORT_DAYS - 1)
    rows.extend(country_rows(grid, SHORT_COUNTRY[0], SHORT_COUNTRY[1], short_first, COUNTRY_LAST_DAY))
    rows.extend(household_rows(args.source, grid))

    with open(args.out, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(rows)

    per_org = {}
    for row in rows:
        per_org.setdefault(row[0], []).append(row[1])
    for org, dates in per_org.items():
        print(f"{org}: {len(dates)} days, {dates[0]} .. {dates[-1]}")
    print(f"{len(rows)} rows -> {args.out}")


if __name__ == "__main__":
    main()
