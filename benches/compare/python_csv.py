"""The Python peer of `run --dry-run` on a CSV export: csv module parse + group by owner."""
import csv
import sys
from collections import defaultdict

with open(sys.argv[1], newline="", encoding="utf-8-sig") as f:
    reader = csv.reader(f)
    header = next(reader)
    owner = header.index("Device Owner")
    by_owner = defaultdict(list)
    for row in reader:
        if row:
            by_owner[row[owner].strip().lower()].append(row)
print(f"{sum(map(len, by_owner.values()))} rows, {len(by_owner)} owners")
