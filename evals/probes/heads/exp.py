# Issue 12 probe (stop 28): classifier heads on the layer-4 + layer-6 features. Run as is, in this
# order, from a scratch folder /work/probe (paths below), with the venv of intermediate_layers.py:
# feat.py (features, ~5 min), exp.py 46,e (LR and LR + nearest examples), exp2.py 46,246 mlp (an MLP head),
# names.py (intent names as extra examples, 10 per intent). Results: evals/RESULTS.md, "Stop 28".
import sys, numpy as np, time
from sklearn.linear_model import LogisticRegression
z = np.load("/work/probe/clinc-feats.npz")
def n(v): return v / np.linalg.norm(v, axis=-1, keepdims=True)
def feats(split, kind):
    m = z[f"{split}_mean"]; emb = n(z[f"{split}_emb"])
    parts = {"e": [emb], "46": [n(m[:, 3]), emb], "246": [n(m[:, 1]), n(m[:, 3]), emb],
             "3456": [n(m[:, 2]), n(m[:, 3]), n(m[:, 4]), emb], "46x": [n(m[:, 3]), emb, n(z[f"{split}_mx"])],
             "46c": [n(m[:, 3]), emb, n(z[f"{split}_cls"])], "456": [n(m[:,3]), n(m[:,4]), emb],
             "all": [n(m[:, k]) for k in range(5)] + [emb]}[kind]
    return n(np.concatenate(parts, 1))
names = np.unique(z["train_y"]); idx = {c: i for i, c in enumerate(names)}
ty = np.array([idx[c] for c in z["train_y"]]); sy = np.array([idx[c] for c in z["test_y"]])
def report(name, P, Po):
    pred = P.argmax(1); top = P.max(1); thr = np.quantile(Po.max(1), 0.75)
    print(f"{name}: no-thr {(pred==sy).mean():.4f}  in-scope@oos75 {((pred==sy)&(top>=thr)).mean():.4f}", flush=True)
kinds = sys.argv[1].split(",") if len(sys.argv) > 1 else ["46"]
for kind in kinds:
    X, T, O = feats("train", kind), feats("test", kind), feats("oos_test", kind)
    t = time.time()
    for C in (10.0, 30.0):
        clf = LogisticRegression(C=C, max_iter=3000).fit(X, ty)
        P, Po = clf.predict_proba(T), clf.predict_proba(O)
        report(f"{kind} LR C={C} ({time.time()-t:.0f}s)", P, Po)
    # kNN class scores fused
    S = T @ X.T; So = O @ X.T
    classes = np.unique(ty)
    def knn_class(S, k=3):
        out = np.zeros((S.shape[0], len(classes)), np.float32)
        for c in classes:
            sc = np.sort(S[:, ty == c], 1)[:, -k:]
            out[:, c] = sc.mean(1)
        return out
    K, Ko = knn_class(S), knn_class(So)
    for a in (5.0, 10.0, 20.0):
        def fuse(P, K):
            L = np.log(P + 1e-9) + a * K
            L = np.exp(L - L.max(1, keepdims=True)); return L / L.sum(1, keepdims=True)
        report(f"{kind} LR+knn3 a={a}", fuse(P, K), fuse(Po, Ko))
