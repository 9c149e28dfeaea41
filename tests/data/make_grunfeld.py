"""Write tests/data/grunfeld.csv from statsmodels' Grunfeld data.

    python tests/data/make_grunfeld.py

statsmodels ships 11 firms x 20 years (1935-1954); firm "American Steel" is
dropped, leaving the classic 10-firm, 200-row Grunfeld panel (the one in
Stata's ``webuse grunfeld``: invest / mvalue=value / kstock=capital).
Columns: invest, value, capital, firm (string name), year (integer).
Floats are written with Python's shortest round-trip repr, i.e. full precision.
"""

from __future__ import annotations

import csv
import os

import numpy as np
import statsmodels.datasets.grunfeld as grunfeld

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    df = grunfeld.load_pandas().data
    df = df[df["firm"] != "American Steel"].reset_index(drop=True)
    assert len(df) == 200 and df["firm"].nunique() == 10
    df["year"] = df["year"].astype(np.int64)
    df = df[["invest", "value", "capital", "firm", "year"]]
    path = os.path.join(HERE, "grunfeld.csv")
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(df.columns)
        for inv, val, cap, firm, year in df.itertuples(index=False):
            w.writerow([repr(float(inv)), repr(float(val)), repr(float(cap)),
                        str(firm), int(year)])
    print(f"wrote {path}: {len(df)} rows, {df['firm'].nunique()} firms")


if __name__ == "__main__":
    main()
