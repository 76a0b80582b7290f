"""Catalog Recall@100/@1000 (relevant = label >= 2.33) of dense recall: fp32 vs int8 query encoder, flat vs IVF."""
import numpy as np, faiss
from leanrank.models.bi_encoder import BiEncoder, DenseIndex
from leanrank.runtime.bi_encoder_onnx import onnx_bi_encoder
from leanrank.serve.cascade import catalog_embeddings
from leanrank.data.registry import load_search_dataset
faiss.omp_set_num_threads(1)
ds = load_search_dataset("homedepot", "/work/shared/data")
test = ds.split()["test"]
rel = {q: {j.product_id for j in js if j.label >= 2.33} for q, js in test.by_query().items()}
qs = [q for q in rel if rel[q]]
ids = list(ds.titles); texts = [ds.titles[i] for i in ids]
bi = BiEncoder.from_pretrained(None)
for int8 in (False, True):
    e = onnx_bi_encoder(bi, "runs/serve-loadtest/cache/encoders", texts[:64] + qs[:64], threads=1, int8=int8, log=lambda *_: None)
    v = catalog_embeddings(e, texts, "runs/serve-loadtest/cache/embeddings", log=lambda *_: None)
    q = e.encode(qs)
    for kind, nprobe in (("fp16", 0), ("ivf", 64), ("ivf", 128)):
        idx = DenseIndex.from_embeddings(ids, v, kind, nprobe=max(nprobe, 1))
        hits = idx.search(q, 1000)
        r = {k: np.mean([len(rel[qq] & {p for p, _ in h[:k]}) / len(rel[qq]) for qq, h in zip(qs, hits)]) for k in (50, 100, 1000)}
        print("int8" if int8 else "fp32", kind, nprobe, {k: round(x, 4) for k, x in r.items()}, flush=True)
