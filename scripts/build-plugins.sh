#!/usr/bin/env bash
# Builds corral's builtin tool plugins (guest crates under tools/plugins/) for wasm32-wasip2 and
# lays each out as a plugin folder: <out>/<id>/{plugin.toml,<id>.wasm,tools.json}, with the
# manifest's sha256 filled in from the built component and the tool list recorded by
# `corral tools record` (corral never asks a plugin for its tools at start; see tools/src/plugins).
#
# Usage: scripts/build-plugins.sh [OUT_DIR]
#   OUT_DIR defaults to $CARGO_TARGET_DIR/release/plugins (or target/release/plugins): next to the
#   corral binary, where `corral` looks for builtin plugins.
# Environment:
#   CORRAL_GUEST_TARGET_DIR  cargo target dir shared by all guest crates (default /var/tmp/corral-guest-target)
#   CORRAL_GUEST_JOBS        cargo -j for guest builds (default: cargo's own)
#   CORRAL_BIN               the corral binary that records tool lists (default: next to OUT_DIR)
# Needs: the Rust target wasm32-wasip2 (`rustup target add wasm32-wasip2`) and a built corral.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
guest_target=${CORRAL_GUEST_TARGET_DIR:-/var/tmp/corral-guest-target}
out=${1:-${CARGO_TARGET_DIR:-$root/target}/release/plugins}
corral=${CORRAL_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/corral}
if [[ ! -x "$corral" ]]; then
    echo "build-plugins: $corral is missing: build corral first (cargo build --release -p corral)" >&2
    exit 1
fi
jobs=()
if [[ -n "${CORRAL_GUEST_JOBS:-}" ]]; then jobs=(-j "$CORRAL_GUEST_JOBS"); fi

if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "build-plugins: the wasm32-wasip2 target is missing; run: rustup target add wasm32-wasip2" >&2
    exit 1
fi

mkdir -p "$out"
for dir in "$root"/tools/plugins/*/; do
    dir=${dir%/}
    [[ -f "$dir/plugin.toml" && -f "$dir/Cargo.toml" ]] || continue
    crate=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$dir/Cargo.toml" | head -1)
    id=$(sed -n 's/^id *= *"\(.*\)"/\1/p' "$dir/plugin.toml" | head -1)
    component=$(sed -n 's/^component *= *"\(.*\)"/\1/p' "$dir/plugin.toml" | head -1)
    echo "build-plugins: building $id ($crate)" >&2
    # No host rustflags (such as target-cpu=native from .cargo/config.toml) for the wasm target.
    CARGO_ENCODED_RUSTFLAGS="" CARGO_TARGET_DIR="$guest_target" cargo build --quiet --release --target wasm32-wasip2 \
        "${jobs[@]}" --manifest-path "$dir/Cargo.toml"
    wasm="$guest_target/wasm32-wasip2/release/${crate//-/_}.wasm"
    sum=$(sha256sum "$wasm" | cut -d' ' -f1)
    tmp="$out/.$id.tmp"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    cp "$wasm" "$tmp/$component"
    sed "s/^sha256 *=.*/sha256 = \"$sum\"/" "$dir/plugin.toml" > "$tmp/plugin.toml"
    "$corral" tools record "$tmp" >/dev/null
    rm -rf "${out:?}/$id"
    mv "$tmp" "$out/$id"
done
echo "build-plugins: builtin plugins are in $out" >&2
