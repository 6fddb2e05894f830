#!/usr/bin/env bash
# The documentation (docs/: the user guide and the API reference from the docstrings), built with
# Sphinx with every warning an error. Needs the package importable (installed, or built in place
# under python/) and the docs extra: pip install ".[docs]". Offline: nothing is fetched.
# Usage: .ci/build_docs.sh [OUTPUT_DIR]   (default build/docs)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/docs}
rm -rf "$out"
python -m sphinx -W --keep-going -b html -q docs "$out"
echo "docs: $out/index.html"
