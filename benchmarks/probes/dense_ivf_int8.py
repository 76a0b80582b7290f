"""IVF nprobe vs exact: time per query (1 thread) and overlap of top-1000/top-100; int8 query encoder vs fp32."""
import random, time, statistics as st, numpy as np, faiss
from leanrank.bench.serve_loadtest import server_config
from leanrank.serve.config import ServeConfig
from leanrank.models.bi_encoder import BiEncoder, DenseIndex
from leanrank.runtime.bi_encoder_onnx import onnx_bi_encoder
from leanrank.serve.cascade import catalog_embeddings
from leanrank.data.registry import load_search_dataset
faiss.omp_set_num_threads(1)
ds = load_search_dataset("homedepot", "/work/shared/data")
qs = ds.split()["test"].queries(); random.Random(0).shuffle(qs); qs = qs[:200]
ids = list(ds.titles); texts = [ds.titles[i] for i in ids]
bi = BiEncoder.from_pretrained(None)
enc = {}
for int8 in (False, True):
    e = onnx_bi_encoder(bi, "runs/serve-loadtest/cache/encoders", texts[:64] + qs[:64], threads=1, int8=int8)
    v = catalog_embeddings(e, texts, "runs/serve-loadtest/cache/embeddings")
    tt = []
    for q in qs[:100]:
        t0 = time.perf_counter(); e.encode([q]); tt.append((time.perf_counter() - t0) * 1e3)
    enc[int8] = (e, v)
    print("encoder int8" if int8 else "encoder fp32", "p50 ms", round(st.median(tt), 2), flush=True)
e32, v32 = enc[False]; e8, v8 = enc[True]
q32, q8 = e32.encode(qs), e8.encode(qs)
print("query cosine int8 vs fp32: min", float((q32 * q8).sum(1).min()), "mean", float((q32 * q8).sum(1).mean()))
exact = DenseIndex.from_embeddings(ids, v32, "flat")
ref = exact.search(q32, 1000)
def overlap(a, b, k):
    return np.mean([len({p for p, _ in x[:k]} & {p for p, _ in y[:k]}) / k for x, y in zip(a, b)])
for name, v, q in (("fp16", v32, q32), ("fp16-int8enc", v8, q8)):
    idx = DenseIndex.from_embeddings(ids, v, "fp16")
    tt = []
    for i in range(100):
        t0 = time.perf_counter(); idx.index.search(q[i:i+1], 1000); tt.append((time.perf_counter() - t0) * 1e3)
    got = idx.search(q, 1000)
    print(name, "p50 ms", round(st.median(tt), 2), "overlap@1000", round(overlap(ref, got, 1000), 4), "@100", round(overlap(ref, got, 100), 4), flush=True)
for nprobe in (8, 16, 32, 64):
    for name, v, q in (("ivf", v32, q32), ("ivf-int8enc", v8, q8)):
        idx = DenseIndex.from_embeddings(ids, v, "ivf", nprobe=nprobe)
        tt = []
        for i in range(100):
            t0 = time.perf_counter(); idx.index.search(q[i:i+1], 1000); tt.append((time.perf_counter() - t0) * 1e3)
        got = idx.search(q, 1000)
        print(name, "nlist", idx.index.nlist, "nprobe", nprobe, "p50 ms", round(st.median(tt), 2), "overlap@1000", round(overlap(ref, got, 1000), 4), "@100", round(overlap(ref, got, 100), 4), flush=True)
