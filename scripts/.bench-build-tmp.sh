#!/usr/bin/env bash
# corral vs llama.cpp's own llama-bench on the same model, threads and llama.cpp source.
#
# llama-bench is built from the llama.cpp that llama-cpp-sys-2 vendors (the crate ships no tools/
# sources, so tools/llama-bench is taken from the llama-cpp-python==0.3.36 source archive, whose
# llama.h differs from the crate's only in state-file version numbers), with GGML_NATIVE=ON, as
# corral's build uses it (.cargo/config.toml sets target-cpu=native). The build is cached in
# $CORRAL_BENCH_DIR (default /var/tmp/corral-bench); then `cargo bench` runs both in one process
# and prints the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR="${CORRAL_BENCH_DIR:-/var/tmp/corral-bench}"
THREADS="${BENCH_THREADS:-$(nproc)}"
LLAMA_BENCH="$BENCH_DIR/build/bin/llama-bench"

if [ ! -x "$LLAMA_BENCH" ]; then
  python3 scripts/fixtures.py --llama-src
  crate_src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/llama-cpp-sys-2-0.1.160/llama.cpp | head -n1)
  echo "bench: building llama-bench from $crate_src (takes several minutes)" >&2
  rm -rf "$BENCH_DIR/src"
  mkdir -p "$BENCH_DIR"
  cp -r "$crate_src" "$BENCH_DIR/src"
  rm -rf "$BENCH_DIR/src/tools/llama-bench"
  cp -r .fixtures/llama.cpp/tools/llama-bench "$BENCH_DIR/src/tools/llama-bench"
  printf 'llama_add_compile_flags()\nadd_subdirectory(llama-bench)\n' > "$BENCH_DIR/src/tools/CMakeLists.txt"
  cmake -S "$BENCH_DIR/src" -B "$BENCH_DIR/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_APP=OFF >/dev/null
  cmake --build "$BENCH_DIR/build" --target llama-bench -j "$(nproc)" >/dev/null
fi

