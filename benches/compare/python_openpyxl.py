"""The Python peer of `run --dry-run` on an XLSX export: openpyxl read-only parse + group by owner."""
import sys
from collections import defaultdict

from openpyxl import load_workbook

workbook = load_workbook(sys.argv[1], read_only=True, data_only=True)
rows = workbook.worksheets[0].iter_rows(values_only=True)
header = list(next(rows))
owner = header.index("Device Owner")
by_owner = defaultdict(list)
for row in rows:
    if row and row[owner]:
        by_owner[str(row[owner]).strip().lower()].append(row)
workbook.close()
print(f"{sum(map(len, by_owner.values()))} rows, {len(by_owner)} owners")
