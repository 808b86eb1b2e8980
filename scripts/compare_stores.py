#!/usr/bin/env python3
# usage: python scripts/compare_stores.py A/selfexplain.db B/selfexplain.db  (refactor equivalence checks)
"""Compare two results stores: records (id, split, query, answer, context, vector), every answer
text, per-item scores, and every metric estimate. Prints counts and any difference."""
import json, sqlite3, sys
a, b = (sqlite3.connect(p) for p in sys.argv[1:3])
def one(db, q): return db.execute(q).fetchall()
ra = one(a, "SELECT benchmark,id,split,query,answer,context,vector FROM records ORDER BY benchmark,id")
rb = one(b, "SELECT benchmark,id,split,query,answer,context,vector FROM records ORDER BY benchmark,id")
pa = one(a, "SELECT benchmark,explainer,record_id,text,scores FROM predictions ORDER BY 1,2,3")
pb = one(b, "SELECT benchmark,explainer,record_id,text,scores FROM predictions ORDER BY 1,2,3")
ma = one(a, "SELECT benchmark,explainer,metric,value,low,high,n FROM metrics ORDER BY 1,2,3")
mb = one(b, "SELECT benchmark,explainer,metric,value,low,high,n FROM metrics ORDER BY 1,2,3")
print(f"records {len(ra)} vs {len(rb)}: identical={ra == rb}")
print(f"answers {len(pa)} vs {len(pb)}: identical texts={[p[:4] for p in pa] == [p[:4] for p in pb]}, "
      f"identical per-item scores={[json.loads(p[4] or 'null') for p in pa] == [json.loads(p[4] or 'null') for p in pb]}")
print(f"metric rows {len(ma)} vs {len(mb)}: identical={ma == mb}")
for x, y in zip(ra, rb):
    if x != y: print("record differs:", x[1]); break
for x, y in zip(pa, pb):
    if x != y: print("answer differs:", x[:3], x[3][:60], "|", y[3][:60]); break
for x, y in zip(ma, mb):
    if x != y: print("metric differs:", x, y); break
print("explainers:", sorted({(p[0], p[1]) for p in pa}))
