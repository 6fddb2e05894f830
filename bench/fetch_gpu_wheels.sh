#!/usr/bin/env bash
# Download the wheels bench/gpu_check.sh installs on the GPU machine (which has no network):
# cp312 manylinux x86_64 binaries of the test/bench dependencies that machine may lack.
# The folder is git-ignored; carry it to the device with the run tool's carry=["bench/wheels"].
#
#   bash bench/fetch_gpu_wheels.sh [DIR]      (default: bench/wheels)
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-bench/wheels}"
mkdir -p "$dir"
# scipy and numpy are oracles and may already be on the machine: gpu_check.sh installs only what is
# missing, but bring them so that it does not depend on it. Total must stay under the 64 MiB the
# device tool carries.
python3 -m pip download --only-binary=:all: --python-version 3.12 --implementation cp \
  --abi cp312 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 -d "$dir" \
  scipy-openblas32 hypothesis pytest-benchmark pytest scipy numpy
du -sh "$dir"
ls "$dir"
