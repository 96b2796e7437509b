#!/usr/bin/env bash
# Installs the reference Python service's pinned packages into evals/baseline/site. Idempotent: when
# the stamp matches requirements.txt, nothing is downloaded. `baton bench --baseline` runs it.
set -euo pipefail
export PIP_ROOT_USER_ACTION=ignore
cd "$(dirname "$0")"

stamp=site/.installed
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
    echo "baseline: up to date (evals/baseline/site)"
    exit 0
fi

python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null; then
    echo "baseline: python3 with pip is needed for the reference service" >&2
    exit 1
fi
echo "baseline: installing pinned packages into evals/baseline/site"
rm -rf site.tmp
"$python" -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
    --target site.tmp -r requirements.txt
rm -rf site
mv site.tmp site
echo "$want" > "$stamp"
echo "baseline: ready"
