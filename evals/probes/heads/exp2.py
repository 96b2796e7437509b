# Issue 12 probe (stop 28): classifier heads on the layer-4 + layer-6 features. Run as is, in this
# order, from a scratch folder /work/probe (paths below), with the venv of intermediate_layers.py:
# feat.py (features, ~5 min), exp.py 46,e (LR and LR + nearest examples), exp2.py 46,246 mlp (an MLP head),
# names.py (intent names as extra examples, 10 per intent). Results: evals/RESULTS.md, "Stop 28".
import sys, numpy as np, time
exec(open("exp.py").read().split("kinds =")[0])
from sklearn.neural_network import MLPClassifier
for kind in sys.argv[1].split(","):
    X, T, O = feats("train", kind), feats("test", kind), feats("oos_test", kind)
    t = time.time()
    clf = LogisticRegression(C=10.0, max_iter=3000).fit(X, ty)
    P, Po = clf.predict_proba(T), clf.predict_proba(O)
    report(f"{kind} LR C=10 ({time.time()-t:.0f}s)", P, Po)
    if len(sys.argv) > 2:
        for h in (1024,):
            t = time.time()
            m = MLPClassifier(hidden_layer_sizes=(h,), alpha=1e-4, max_iter=60, random_state=0).fit(X, ty)
            Pm, Pmo = m.predict_proba(T), m.predict_proba(O)
            report(f"{kind} MLP {h} ({time.time()-t:.0f}s)", Pm, Pmo)
            report(f"{kind} LR+MLP avg", (P + Pm) / 2, (Po + Pmo) / 2)
