#!/usr/bin/env bash
# Installs what building and testing corral needs and is missing, saying what it installs:
# the Rust toolchain (rustup), Debian packages for the llama.cpp build (cmake, libclang-dev, a C++
# compiler), python3 for the fixture script, and the wasm32-wasip2 target for tool plugins.
# Runs as root on a fresh Debian machine; as another user it names what to install and stops.
set -euo pipefail

say() { printf 'setup: %s\n' "$*" >&2; }

missing_packages=()
command -v cmake >/dev/null 2>&1 || missing_packages+=(cmake)
command -v c++ >/dev/null 2>&1 || missing_packages+=(g++)
command -v make >/dev/null 2>&1 || missing_packages+=(make)
command -v python3 >/dev/null 2>&1 || missing_packages+=(python3)
command -v curl >/dev/null 2>&1 || missing_packages+=(curl)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || ls /usr/lib/*/libclang*.so* >/dev/null 2>&1 \
  || missing_packages+=(libclang-dev)
[ -e /etc/ssl/certs/ca-certificates.crt ] || missing_packages+=(ca-certificates)

if [ ${#missing_packages[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    say "missing: ${missing_packages[*]}; install them (sudo apt-get install ${missing_packages[*]}) and rerun"
    exit 1
  fi
  say "installing Debian packages: ${missing_packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing_packages[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    say "installing the Rust toolchain with rustup (stable)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >/dev/null
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi

if command -v rustup >/dev/null 2>&1; then
  if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    say "installing the rustup target wasm32-wasip2 (tool plugins are built for it)"
    rustup target add wasm32-wasip2 >/dev/null
  fi
else
  say "rustup not found: make sure the wasm32-wasip2 target is installed for tool plugins"
fi
