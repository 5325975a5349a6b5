"""CPU seconds of rebuild, add-tag, tag and in-process queries at 100k x 512, through the API of either side
of the core redesign (issue 9): ``new`` (``tagstore.api``) or ``old`` (``Store`` methods and ``tagstore.tagging``,
as at commit 7d6b22f). CPU time (``getrusage``: user + sys, all threads) is used instead of wall time so a
shared, loaded machine still compares like with like.

    python benchmarks/bench_redesign.py new              # in a checkout of this tree
    python benchmarks/bench_redesign.py old              # in a checkout of 7d6b22f (copy this file there)
"""
import resource, sys, tempfile, time
from pathlib import Path
import numpy as np
sys.path.insert(0, "benchmarks")
from bench_store import synthetic_store
from bench_tags import add_tracks
side = sys.argv[1]
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime
rng = np.random.default_rng(0)
with tempfile.TemporaryDirectory() as tmp:
    store = synthetic_store(Path(tmp) / "s", 100_000, 512)
    if side == "new":
        from tagstore import api
        rebuild = lambda: api.rebuild(store); add_tag = lambda n, ex: api.add_tag(store, n, ex, method="ensemble"); tag = lambda: api.tag(store)
        sim = lambda q: api.similar(store, q, k=10)
    else:
        from tagstore import tagging
        rebuild = lambda: store.rebuild(); add_tag = lambda n, ex: tagging.add_tag(store, n, ex, method="ensemble"); tag = lambda: tagging.rescore(store)
        sim = lambda q: store.similar(q, k=10)
    c = cpu(); rebuild(); r_cpu = cpu() - c
    adds = []
    for r in range(6):
        ex = [str(i) for i in rng.choice(np.arange(1, 100_001), 20, replace=False)]
        c = cpu(); add_tag(f"b{r}", ex); adds.append(cpu() - c)
    add_tracks(store, 100_001, 1000, seed=1)
    c = cpu(); tag(); t_cpu = cpu() - c
    with store.session():
        sim(1); c = cpu()
        for q in range(2, 52): sim(q)
        q_cpu = (cpu() - c) / 50
print(f"{side}: rebuild {r_cpu:.2f} cpu-s | add-tag median {np.median(adds[1:]):.3f} cpu-s (first {adds[0]:.2f}) | tag 1k x 6 tags {t_cpu:.3f} cpu-s | similar in-process {q_cpu*1000:.1f} cpu-ms")
