#!/usr/bin/env bash
# Installs the pinned packages of a folder (models/ by default, or the folder given, such as
# models/llm) into its site/, runs the folder's build.sh on them when it has one (models/ builds the
# int8 encoder there), and checks every file Baton loads against its SHA256SUMS. Idempotent: when
# the stamp matches the requirements and build scripts and every checksum is right, it downloads
# nothing.
set -euo pipefail
cd "${1:-$(dirname "$0")}"
name=$(basename "$PWD")

stamp=site/.installed
# The stamp covers what decides site/'s contents: the pinned packages, the build scripts and the
# committed model the build derives a file from.
want=$(cat requirements.txt $(ls build.sh encoder/*.py sentiment/*.onnx 2>/dev/null) | sha256sum | cut -d' ' -f1)

checksums_ok() { sha256sum --quiet --check SHA256SUMS >/dev/null 2>&1; }

if [[ -f $stamp && $(cat "$stamp") == "$want" ]] && checksums_ok; then
    echo "$name: up to date ($PWD/site)"
    exit 0
fi

python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null; then
    echo "$name: python3 with pip is needed to install the pinned packages" >&2
    exit 1
fi

echo "$name: installing pinned packages into $PWD/site"
rm -rf site.tmp
"$python" -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes \
    --target site.tmp -r requirements.txt
if [[ -f build.sh ]]; then
    PYTHON=$python bash build.sh site.tmp
fi
rm -rf site
mv site.tmp site

if ! sha256sum --check SHA256SUMS; then
    echo "$name: a file does not match $PWD/SHA256SUMS" >&2
    exit 1
fi
echo "$want" > "$stamp"
echo "$name: ready"
