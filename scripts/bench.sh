#!/usr/bin/env bash
# corral vs llama.cpp's own llama-bench on the same model, threads and llama.cpp source.
#
# llama-bench is built from the llama.cpp that llama-cpp-sys-2 vendors (the crate ships no tools/
# sources, so tools/llama-bench is taken from the llama-cpp-python==0.3.36 source archive, whose
# llama.h differs from the crate's only in state-file version numbers), with GGML_NATIVE=ON, as
# corral's build uses it (.cargo/config.toml sets target-cpu=native), and with the CMake build
# type and C/C++ flags read from corral's own llama.cpp build (its CMakeCache.txt), so both sides
# are compiled alike. The build is cached in $CORRAL_BENCH_DIR (default /var/tmp/corral-bench)
# and redone when those flags change; then `cargo bench` runs both in one process and prints
# the ratios.
#
# Why the flags matter: GCC 12's `_tile_loadconfig` tells the compiler that `ldtilecfg` reads 8
# bytes of the tile configuration, not 64, so at -O3 (CMake's Release) GCC drops the stores of
# the tile rows and columns in ggml's AMX kernel and `ldtilecfg` loads stack garbage: SIGILL
# (`tileloadd` on an unconfigured tile) or SIGSEGV (#GP on `ldtilecfg`). corral's llama.cpp is
# built as RelWithDebInfo (-O2, since the release profile keeps line tables), where the stores
# survive; built the same way, llama-bench runs AMX too.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR="${CORRAL_BENCH_DIR:-/var/tmp/corral-bench}"
THREADS="${BENCH_THREADS:-$(nproc)}"
LLAMA_BENCH="$BENCH_DIR/build/bin/llama-bench"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"

# corral's llama.cpp build settings, from the newest CMake cache of llama-cpp-sys-2.
corral_cache=$(ls -t "$TARGET_DIR"/release/build/llama-cpp-sys-2-*/out/build/CMakeCache.txt 2>/dev/null | head -n1)
[ -n "$corral_cache" ] || { echo "bench: no llama.cpp build of corral's in $TARGET_DIR (run make build)" >&2; exit 1; }
cache_value() { sed -n "s/^$1:[A-Z]*=//p" "$corral_cache" | head -n1; }
build_type=$(cache_value CMAKE_BUILD_TYPE)
c_flags=$(cache_value CMAKE_C_FLAGS)
cxx_flags=$(cache_value CMAKE_CXX_FLAGS)
stamp="build_type=$build_type c_flags=$c_flags cxx_flags=$cxx_flags"
echo "bench: llama.cpp of both sides: $build_type, C flags '$c_flags', C++ flags '$cxx_flags', GGML_NATIVE=ON" >&2

if [ ! -x "$LLAMA_BENCH" ] || [ "$(cat "$BENCH_DIR/flags" 2>/dev/null)" != "$stamp" ]; then
  python3 scripts/fixtures.py --llama-src
  crate_src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/llama-cpp-sys-2-0.1.160/llama.cpp | head -n1)
  echo "bench: building llama-bench from $crate_src (takes several minutes)" >&2
  rm -rf "$BENCH_DIR/src" "$BENCH_DIR/build" "$BENCH_DIR/flags"
  mkdir -p "$BENCH_DIR"
  cp -r "$crate_src" "$BENCH_DIR/src"
  rm -rf "$BENCH_DIR/src/tools/llama-bench"
  cp -r .fixtures/llama.cpp/tools/llama-bench "$BENCH_DIR/src/tools/llama-bench"
  printf 'llama_add_compile_flags()\nadd_subdirectory(llama-bench)\n' > "$BENCH_DIR/src/tools/CMakeLists.txt"
  cmake -S "$BENCH_DIR/src" -B "$BENCH_DIR/build" -DCMAKE_BUILD_TYPE="$build_type" \
    -DCMAKE_C_FLAGS="$c_flags" -DCMAKE_CXX_FLAGS="$cxx_flags" -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_APP=OFF >/dev/null
  cmake --build "$BENCH_DIR/build" --target llama-bench -j "$(nproc)" >/dev/null
  printf '%s' "$stamp" > "$BENCH_DIR/flags"
fi

MODEL=$("$TARGET_DIR/release/corral" model path)
LLAMA_BENCH="$LLAMA_BENCH" BENCH_MODEL="$MODEL" BENCH_THREADS="$THREADS" \
  cargo bench -p corral --bench generation
