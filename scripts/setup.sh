#!/usr/bin/env bash
# Installs what building and testing corral needs and is missing, saying what it installs:
#   - Debian packages: cmake, libclang-dev (bindgen loads libclang), g++, make, python3 and
#     python3-venv (fixture script, the independent Jinja2 oracle), curl, ca-certificates, tmux
#     (the REPL tests drive the chat in a real terminal), fonts-dejavu-core (the text of
#     `corral bench`'s plots);
#   - the Rust toolchain pinned in rust-toolchain.toml, through rustup (rustup-init is fetched from
#     the Rust distribution server and checked against its published sha256);
#   - the rustup target wasm32-wasip2 (tool plugins are built for it).
# Runs as root on a fresh Debian machine; as another user it names what to install and stops.
#
# Each requirement is checked by what uses it: Debian packages by their dpkg status (a loose file
# glob once took `libclang-cpp14`, which is not libclang, for libclang), libclang also by the file
# names bindgen loads.
#
#   scripts/setup.sh                 check and install
#   scripts/setup.sh --plan [ROOT]   print what would be installed for the system under ROOT
#                                    (default /), one item a line, and install nothing
set -euo pipefail

say() { printf 'setup: %s\n' "$*" >&2; }

root_dir=/
plan_only=0
case "${1:-}" in
  --plan) plan_only=1; root_dir=${2:-/} ;;
  "") ;;
  *) say "unknown argument '$1' (expected --plan [ROOT])"; exit 2 ;;
esac
root_dir=${root_dir%/}

toolchain_file="$(cd "$(dirname "$0")/.." && pwd)/rust-toolchain.toml"
toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$toolchain_file")
[ -n "$toolchain" ] || { say "no channel in $toolchain_file"; exit 1; }

# The Debian packages the build and the tests use, and how each is known to be present.
required_packages=(cmake libclang-dev g++ make python3 python3-venv curl ca-certificates tmux fonts-dejavu-core)

# dpkg's own record under the root: "install ok installed" and nothing else means installed.
package_installed() {
  local status
  status=$(dpkg-query --admindir="$root_dir/var/lib/dpkg" -W -f='${Status}' "$1" 2>/dev/null) || return 1
  [ "$status" = "install ok installed" ]
}

# The file names clang-sys (bindgen) loads: libclang.so, libclang-N.so, libclang.so.N,
# libclang-N.so.N — and never libclang-cpp.so.N, a different library.
libclang_present() {
  local f name
  for f in "$root_dir"/usr/lib/llvm-*/lib/libclang*.so* "$root_dir"/usr/lib/*/libclang*.so*; do
    [ -e "$f" ] || continue
    name=${f##*/}
    case "$name" in
      libclang-cpp*) continue ;;
      libclang.so|libclang.so.*|libclang-[0-9]*.so|libclang-[0-9]*.so.*) return 0 ;;
    esac
  done
  return 1
}

missing_packages() {
  local pkg
  for pkg in "${required_packages[@]}"; do
    if [ "$pkg" = libclang-dev ]; then
      # The headers come with libclang-dev; bindgen also needs the library itself.
      package_installed libclang-dev && libclang_present && continue
    else
      package_installed "$pkg" && continue
    fi
    echo "$pkg"
  done
}

# The Rust toolchain: rustup under $CARGO_HOME (default ~/.cargo), with the pinned toolchain and
# the wasm target. Prints what is missing: rustup, toolchain, wasm32-wasip2.
cargo_home() { echo "$root_dir${CARGO_HOME:-$HOME/.cargo}"; }
missing_rust() {
  local rustup
  rustup="$(cargo_home)/bin/rustup"
  if [ ! -x "$rustup" ] && [ -z "$root_dir" ]; then
    rustup=$(command -v rustup 2>/dev/null || echo "$rustup")
  fi
  if [ ! -x "$rustup" ]; then
    echo rustup; echo "toolchain $toolchain"; echo wasm32-wasip2; return
  fi
  if ! "$rustup" toolchain list 2>/dev/null | grep -q "^$toolchain-"; then
    echo "toolchain $toolchain"; echo wasm32-wasip2; return
  fi
  "$rustup" target list --installed --toolchain "$toolchain" 2>/dev/null | grep -qx wasm32-wasip2 \
    || echo wasm32-wasip2
}

mapfile -t packages < <(missing_packages)
mapfile -t rust < <(missing_rust)
if [ "$plan_only" -eq 1 ]; then
  printf '%s\n' "${packages[@]}" "${rust[@]}" | sed '/^$/d'
  exit 0
fi

if [ ${#packages[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    say "missing Debian packages: ${packages[*]}; install them (sudo apt-get install ${packages[*]}) and rerun"
    exit 1
  fi
  say "installing Debian packages: ${packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

# rustup-init for this host, from the distribution server rustup itself uses, verified against the
# sha256 published beside it. It installs rustup, cargo and rustc under ~/.cargo and ~/.rustup.
install_rustup() {
  local server=${RUSTUP_DIST_SERVER:-https://static.rust-lang.org}
  local triple tmp want got
  case "$(uname -m)" in
    x86_64) triple=x86_64-unknown-linux-gnu ;;
    aarch64) triple=aarch64-unknown-linux-gnu ;;
    *) say "no rustup-init for $(uname -m): install Rust $toolchain by hand"; exit 1 ;;
  esac
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  say "installing rustup (minimal profile, Rust $toolchain) from $server into ~/.cargo and ~/.rustup"
  curl -fsS --proto '=https' --tlsv1.2 --retry 3 -o "$tmp/rustup-init" "$server/rustup/dist/$triple/rustup-init"
  want=$(curl -fsS --proto '=https' --tlsv1.2 --retry 3 "$server/rustup/dist/$triple/rustup-init.sha256" | cut -d' ' -f1)
  got=$(sha256sum "$tmp/rustup-init" | cut -d' ' -f1)
  if [ -z "$want" ] || [ "$want" != "$got" ]; then
    say "rustup-init failed its checksum (published '$want', downloaded '$got'); not running it"
    exit 1
  fi
  chmod +x "$tmp/rustup-init"
  "$tmp/rustup-init" -y --no-modify-path --profile minimal --default-toolchain "$toolchain" >/dev/null 2>&1
}

export PATH="$(cargo_home)/bin:$PATH"
for item in "${rust[@]}"; do
  case "$item" in
    rustup) install_rustup ;;
    "toolchain $toolchain")
      # rustup-init above may have installed it already.
      rustup toolchain list 2>/dev/null | grep -q "^$toolchain-" && continue
      say "installing the Rust toolchain $toolchain (pinned in rust-toolchain.toml)"
      rustup toolchain install "$toolchain" --profile minimal >/dev/null 2>&1 ;;
    wasm32-wasip2)
      say "installing the rustup target wasm32-wasip2 for $toolchain (tool plugins are built for it)"
      rustup target add wasm32-wasip2 --toolchain "$toolchain" >/dev/null ;;
  esac
done
