#!/usr/bin/env python3
"""Probe (issue 13, not adopted): the sentiment model as a branch on the encoder's first K layers.

Baton runs two transformer passes per message: the encoder (6 layers) and the sentiment model
(a fine-tuned 4-layer truncation of the same all-MiniLM-L6-v2). Both start from the same weights,
so the sentiment model's first K layers could be the encoder's own, run once: this trains only
layers K..3 + the head of models/sentiment/train.py's recipe (AdamW lr 8e-5, 2 epochs, batch 32,
balanced class weights, average of the last two half-epoch checkpoints, logit offsets on val) on
the outputs of the shipped int8 encoder's first K layers (each TweetEval text alone, as Baton
runs it), exports the branch (inputs hidden_states + attention_mask), quantises it as train.py
does and scores it batch 1 on val and test. Results in evals/RESULTS.md ("Stop 27").

    python3 -m venv /work/venvs/sentiment
    /work/venvs/sentiment/bin/pip install -r models/sentiment/requirements.txt
    /work/venvs/sentiment/bin/python evals/probes/sentiment_branch.py --k 2 --work ../cache/sentiment-branch

(from the repository root, after `make models`; about 30 minutes for K=2 on one core, most of it
training; the trunk outputs are cached under --work, about 2 GB.)
"""
import argparse, json, math, pathlib, random, sys, time
import numpy as np
import torch, torch.nn as nn

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "models/sentiment"))
import train as T  # noqa

ap = argparse.ArgumentParser()
ap.add_argument("--k", type=int, default=2)
ap.add_argument("--layers", type=int, default=4)
ap.add_argument("--epochs", type=int, default=2)
ap.add_argument("--lr", type=float, default=8e-5)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--work", default=str(REPO.parent / "cache/sentiment-branch"), help="outside the repository")
ap.add_argument("--data", default=str(REPO.parent / "shared/data"))
args = ap.parse_args()
torch.set_num_threads(args.threads)
work = pathlib.Path(args.work) / f"k{args.k}"
work.mkdir(parents=True, exist_ok=True)
data = args.data
cfg = json.loads((T.BASE / "config.json").read_text())
tok = T.make_tokenizer(64)

import onnx, onnxruntime as ort

trunk_out = f"layer_norm_{2 * args.k}"


def trunk_features(split):
    cache = pathlib.Path(args.work) / f"feat-k{args.k}-{split}.npz"
    texts, y = T.read_split(data, split)
    seqs = T.encode(tok, texts)
    if cache.exists():
        z = np.load(cache)
        flat, offs = z["flat"], z["offs"]
        return [flat[offs[i]:offs[i + 1]] for i in range(len(seqs))], y, seqs
    m = onnx.load(str(REPO / "models/site/baton_encoder/model-int8.onnx"))
    m.graph.output.insert(0, onnx.helper.make_tensor_value_info(trunk_out, onnx.TensorProto.FLOAT, None))
    p = pathlib.Path(args.work) / f"enc-k{args.k}.onnx"
    onnx.save(m, str(p))
    so = ort.SessionOptions(); so.intra_op_num_threads = 1
    s = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
    feats = []
    t0 = time.time()
    for e in seqs:
        ids = np.array([e], dtype=np.int64)
        h = s.run([trunk_out], {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})[0][0]
        feats.append(h.astype(np.float32))
    offs = np.cumsum([0] + [len(f) for f in feats])
    np.savez(cache, flat=np.concatenate(feats), offs=offs)
    print(f"features {split}: {len(feats)} in {time.time() - t0:.0f}s", flush=True)
    return feats, y, seqs


class Branch(nn.Module):
    def __init__(self, p=0.1):
        super().__init__()
        h = cfg["hidden_size"]
        self.layers = nn.ModuleList(T.Layer(h, cfg["num_attention_heads"], cfg["intermediate_size"], p)
                                    for _ in range(args.layers - args.k))
        self.head = nn.Linear(h, 3)
        self.drop = nn.Dropout(p)

    def forward(self, x, attention_mask):
        m = attention_mask.to(x.dtype)
        bias = ((1.0 - m) * -10000.0)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, bias)
        pooled = (x * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp(min=1e-9)
        return self.head(self.drop(pooled))


def init_branch(model):
    full = T.SentimentModel(cfg, args.layers)
    T.load_base(full, args.layers)
    for j, i in enumerate(range(args.k, args.layers)):
        model.layers[j].load_state_dict(full.layers[i].state_dict())


def padf(feats):
    n = max(len(f) for f in feats)
    x = np.zeros((len(feats), n, feats[0].shape[1]), dtype=np.float32)
    mask = np.zeros((len(feats), n), dtype=np.int64)
    for i, f in enumerate(feats):
        x[i, :len(f)] = f
        mask[i, :len(f)] = 1
    return torch.from_numpy(x), torch.from_numpy(mask)


def logits_of(model, feats, bs=128):
    return T.outputs_in_length_order(model, feats, 3, padf, bs)


tr, tr_y, _ = trunk_features("train")
va, va_y, _ = trunk_features("val")
te, te_y, _ = trunk_features("test")

torch.manual_seed(13); random.seed(13); rng = np.random.default_rng(13)
model = Branch()
init_branch(model)
counts = np.bincount(tr_y, minlength=3)
w = counts.sum() / (3 * counts)
loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(w, dtype=torch.float32))
no_decay = lambda n: n.endswith("bias") or ".ln" in n
named = list(model.named_parameters())
opt = torch.optim.AdamW([
    {"params": [p for n, p in named if not no_decay(n)], "weight_decay": 0.01},
    {"params": [p for n, p in named if no_decay(n)], "weight_decay": 0.0}], lr=args.lr)
spe = math.ceil(len(tr) / 32)
total = spe * args.epochs
warm = int(0.06 * total)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: s / max(1, warm) if s < warm else max(0.0, (total - s) / max(1, total - warm)))
lengths = [len(f) for f in tr]
eval_at = {round(spe / 2), spe}
history = []
t0 = time.time()
for epoch in range(args.epochs):
    model.train()
    for bi, b in enumerate(T.batches_by_length(len(tr), lengths, 32, rng)):
        x, m = padf([tr[i] for i in b])
        loss = loss_fn(model(x, m), torch.from_numpy(tr_y[b]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); sched.step()
        if (bi + 1) % 300 == 0:
            print(f"  epoch {epoch + 1} step {bi + 1}/{spe} loss {loss.item():.4f} {time.time() - t0:.0f}s", flush=True)
        if (bi + 1) in eval_at:
            mm = T.metrics(va_y, logits_of(model, va).argmax(1))
            path = work / f"ckpt-e{epoch}-{bi + 1}.pt"
            torch.save(model.state_dict(), path)
            history.append((str(path), mm["macro_recall"]))
            print(f"VAL e{epoch + 1} {bi + 1} {T.fmt(mm)} {time.time() - t0:.0f}s", flush=True)
            model.train()
states = [torch.load(p) for p, _ in history[-2:]]
avg = {k: sum(s[k] for s in states) / 2 for k in states[0]}
model.load_state_dict(avg)
mm = T.metrics(va_y, logits_of(model, va).argmax(1))
print(f"VAL avg2 {T.fmt(mm)}", flush=True)
cands = history + [("avg", mm["macro_recall"])]
best = max(cands, key=lambda c: c[1])
if best[0] != "avg":
    model.load_state_dict(torch.load(best[0]))
print("chosen", best)
# calibration offsets on val
lv = logits_of(model, va)
grid = np.round(np.arange(-1.0, 1.0001, 0.05), 2)
bestc = (T.metrics(va_y, lv.argmax(1))["macro_recall"], 0.0, (0.0, 0.0, 0.0))
for b1 in grid:
    for b2 in grid:
        r = T.metrics(va_y, (lv + np.array([0, b1, b2], dtype=np.float32)).argmax(1))["macro_recall"]
        key = (r, -(abs(b1) + abs(b2)))
        if key > (bestc[0], bestc[1]):
            bestc = (r, key[1], (0.0, float(b1), float(b2)))
print("calibration", bestc, flush=True)
with torch.no_grad():
    model.head.bias += torch.tensor(bestc[2], dtype=torch.float32)
torch.save(model.state_dict(), work / "best.pt")
lt = logits_of(model, te)
print(f"torch TEST {T.fmt(T.metrics(te_y, lt.argmax(1)))}", flush=True)

# export branch: inputs hidden_states [b,s,384], attention_mask [b,s] -> logits
model.eval()
x, m = padf([te[0], te[1]])
fp32 = work / "branch-fp32.onnx"
torch.onnx.export(model, (x, m), str(fp32), opset_version=17, dynamo=False,
                  input_names=["hidden_states", "attention_mask"], output_names=["logits"],
                  dynamic_axes={"hidden_states": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}})
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.shape_inference import quant_pre_process
pre = work / "branch-pre.onnx"
quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=False)
out = work / "branch-int8.onnx"
quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"])
so = ort.SessionOptions(); so.intra_op_num_threads = 1
for name, p in (("fp32", fp32), ("int8", out)):
    s = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
    res = {}
    for split, feats, y in (("val", va, va_y), ("test", te, te_y)):
        pred = []
        for f in feats:
            pred.append(s.run(["logits"], {"hidden_states": f[None], "attention_mask": np.ones((1, len(f)), dtype=np.int64)})[0][0].argmax())
        res[split] = T.metrics(y, np.array(pred))
        print(f"ONNX {name} batch1 {split} {T.fmt(res[split])}", flush=True)
    if name == "int8":
        print("confusion test", res["test"]["confusion"])
print(f"done {time.time() - t0:.0f}s")
