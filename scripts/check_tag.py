"""Read `tagstore scores NAME --csv` on stdin and mark each track with its corpus label (demo helper).

    tagstore scores waltz --top 10 --no-examples --csv | python scripts/check_tag.py waltz labels.csv
"""

import csv
import sys
from pathlib import Path

tag, labels = sys.argv[1], Path(sys.argv[2])
with labels.open(newline="") as fh:
    truth = {str((labels.parent / r["path"]).resolve()): r["tags"].split(";") for r in csv.DictReader(fh)}
rows = list(csv.DictReader(sys.stdin))
hits = 0
for r in rows:
    ok = tag in truth.get(str(Path(r["path"]).resolve()), [])
    hits += ok
    print(f"{r['rank']:>3}  {float(r['score']):8.3f}  {'yes' if ok else 'no ':3}  {r['path']}")
print(f"precision@{len(rows)}: {hits} of the top {len(rows)} new tracks are really tagged {tag!r} in the corpus")
