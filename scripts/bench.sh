#!/usr/bin/env bash
# Builds llama.cpp's own llama-bench and llama-server once (cached), then runs `corral bench`
# with the arguments given (`make bench ARGS=--quick`, `scripts/bench.sh --json`).
#
# Both tools are built around the llama.cpp that corral's engine is built from: the inference
# core (ggml, libllama and its header) is llama-cpp-sys-2's vendored copy, the one corral links.
# That crate ships no tools, so the tools' own sources (tools/llama-bench, tools/server and its
# mtmd and ui parts, and the common/ helpers they are written against) come from the
# llama-cpp-python==0.3.36 source archive (scripts/fixtures.py --llama-src, hash-checked).
# The build type and C/C++ flags are read from corral's own llama.cpp build (its
# CMakeCache.txt), with GGML_NATIVE=ON as corral's build has it (.cargo/config.toml sets
# target-cpu=native), so both sides are compiled alike. The build is cached in
# $CORRAL_BENCH_DIR (default /var/tmp/corral-bench) and redone when those flags change.
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
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
BIN="$BENCH_DIR/build/bin"

# corral's llama.cpp build settings, from the newest CMake cache of llama-cpp-sys-2.
corral_cache=$(ls -t "$TARGET_DIR"/release/build/llama-cpp-sys-2-*/out/build/CMakeCache.txt 2>/dev/null | head -n1)
[ -n "$corral_cache" ] || { echo "bench: no llama.cpp build of corral's in $TARGET_DIR (run make build)" >&2; exit 1; }
cache_value() { sed -n "s/^$1:[A-Z]*=//p" "$corral_cache" | head -n1; }
build_type=$(cache_value CMAKE_BUILD_TYPE)
c_flags=$(cache_value CMAKE_C_FLAGS)
cxx_flags=$(cache_value CMAKE_CXX_FLAGS)
# The layout version changes when what is built changes (2: llama-server too).
stamp="layout=2 build_type=$build_type c_flags=$c_flags cxx_flags=$cxx_flags"

if [ ! -x "$BIN/llama-bench" ] || [ ! -x "$BIN/llama-server" ] || [ "$(cat "$BENCH_DIR/flags" 2>/dev/null)" != "$stamp" ]; then
  echo "bench: llama.cpp tools: $build_type, C flags '$c_flags', C++ flags '$cxx_flags', GGML_NATIVE=ON" >&2
  python3 scripts/fixtures.py --llama-src
  crate_src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/llama-cpp-sys-2-0.1.160/llama.cpp | head -n1)
  tools_src=.fixtures/llama.cpp
  echo "bench: building llama-bench and llama-server around $crate_src (takes 10-20 minutes once)" >&2
  rm -rf "$BENCH_DIR/src" "$BENCH_DIR/build" "$BENCH_DIR/flags"
  mkdir -p "$BENCH_DIR"
  cp -r "$crate_src" "$BENCH_DIR/src"
  rm -rf "$BENCH_DIR/src/common" "$BENCH_DIR/src/tools"
  cp -r "$tools_src/common" "$BENCH_DIR/src/common"
  mkdir -p "$BENCH_DIR/src/tools" "$BENCH_DIR/src/scripts"
  for tool in llama-bench server mtmd ui; do
    cp -r "$tools_src/tools/$tool" "$BENCH_DIR/src/tools/$tool"
  done
  cp "$tools_src/scripts/ui-assets.cmake" "$BENCH_DIR/src/scripts/"
  printf '%s\n' 'llama_add_compile_flags()' 'add_subdirectory(llama-bench)' 'add_subdirectory(mtmd)' \
    'add_subdirectory(ui)' 'add_subdirectory(server)' > "$BENCH_DIR/src/tools/CMakeLists.txt"
  cmake -S "$BENCH_DIR/src" -B "$BENCH_DIR/build" -DCMAKE_BUILD_TYPE="$build_type" \
    -DCMAKE_C_FLAGS="$c_flags" -DCMAKE_CXX_FLAGS="$cxx_flags" -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF >/dev/null
  cmake --build "$BENCH_DIR/build" --target llama-bench llama-server -j "$(nproc)" >/dev/null
  printf '%s' "$stamp" > "$BENCH_DIR/flags"
fi

exec "$TARGET_DIR/release/corral" bench --llama-bin "$BIN" "$@"
