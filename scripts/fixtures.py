#!/usr/bin/env python3
"""Fetch the test fixtures corral's tests read from registry packages (no model hub here).

From Meta's wheel llama-models==0.3.0 (its reference material for the Llama 3.1 prompt format):
  - `llama3_1/prompt_format.md`, and from it `llama3_1-prompt-examples.json`: every example's
    input prompt and model response, taken verbatim from the document's fenced blocks
  - `llama3/tool_utils.py` and `llama3/tests/api/test_tool_utils.py` (Meta's tool-call parser)
From the PyPI source archive of llama-cpp-python==0.3.36 (it vendors llama.cpp commit 0c1e570):
  - the official chat templates of Llama 3.1 / 3.2 / 3.3 Instruct (`models/templates/*.jinja`)
  - the vocab-only Llama 3 tokenizer `ggml-vocab-llama-bpe.gguf`
and, with --llama-src, the whole vendored llama.cpp tree (to build `llama-bench` for benchmarks).
It also makes the virtual environment `venv/` of the independent template oracle (the prompts
test `python_oracle`): Python's own Jinja2, pinned and hash-checked, installed with pip.

Each archive is verified against a pinned sha256 and cached under ~/.cache/corral/downloads, so a
second run costs nothing. Nothing fetched here is committed to the repository.
Usage: scripts/fixtures.py [--dest DIR] [--llama-src]
"""
import argparse
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import urllib.parse
import urllib.request
import zipfile

INDEX = os.environ.get("CORRAL_PYPI_INDEX", "https://pypi.org/pypi")
# (package, version, file name, sha256) of each registry file the fixtures come from.
LLAMA_CPP = ("llama-cpp-python", "0.3.36", "llama_cpp_python-0.3.36.tar.gz",
             "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e")
LLAMA_MODELS = ("llama-models", "0.3.0", "llama_models-0.3.0-py3-none-any.whl",
                "7f77f78ff13fca09f70d76a376aff6414cd901623fb9d57e69c2f8367a73032f")
LLAMA_MODELS_MEMBERS = {
    "llama_models/llama3_1/prompt_format.md": "llama-models/llama3_1/prompt_format.md",
    "llama_models/llama3/tool_utils.py": "llama-models/llama3/tool_utils.py",
    "llama_models/llama3/tests/api/test_tool_utils.py": "llama-models/llama3/tests/api/test_tool_utils.py",
}
EXAMPLES = "llama3_1-prompt-examples.json"
# The oracle's packages, exact versions with the sha256 of every file pip may choose: the pure
# wheel of Jinja2, MarkupSafe's wheels for CPython 3.11-3.13 on x86_64 and aarch64 Linux, and its
# source archive (built where no wheel fits).
ORACLE_REQUIREMENTS = """\
jinja2==3.1.6 \\
    --hash=sha256:85ece4451f492d0c13c5dd7c13a64681a86afae63a5f347908daf103ce6d2f67
markupsafe==3.0.2 \\
    --hash=sha256:a123e330ef0853c6e822384873bef7507557d8e4a082961e1defa947aa59ba84 \\
    --hash=sha256:2cb8438c3cbb25e220c2ab33bb226559e7afb3baec11c4f218ffa7308603c832 \\
    --hash=sha256:e17c96c14e19278594aa4841ec148115f9c7615a47382ecb6b82bd8fea3ab0c8 \\
    --hash=sha256:1c99d261bd2d5f6b59325c92c73df481e05e57f19837bdca8413b9eac4bd8028 \\
    --hash=sha256:15ab75ef81add55874e7ab7055e9c397312385bd9ced94920f2802310c930396 \\
    --hash=sha256:569511d3b58c8791ab4c2e1285575265991e6d8f8700c7be0e88f86cb0672094 \\
    --hash=sha256:ee55d3edf80167e48ea11a923c7386f4669df67d7994554387f84e7d8b0a2bf0
"""
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


def file_url(package: str, version: str, filename: str) -> str:
    api = f"{INDEX}/{package}/json"
    with urllib.request.urlopen(api, timeout=60) as resp:
        meta = json.load(resp)
    for entry in meta["releases"].get(version, []):
        if entry["filename"] == filename:
            return urllib.parse.urljoin(api, entry["url"])
    sys.exit(f"fixtures: {filename} is not listed by {api}")


def fetch(spec) -> pathlib.Path:
    """Downloads one pinned registry file into the cache (once) and returns its path."""
    package, version, filename, sha256 = spec
    target = cache_dir() / filename
    if target.exists() and sha256_of(target) == sha256:
        return target
    url = file_url(package, version, filename)
    print(f"fixtures: downloading {filename} from PyPI", file=sys.stderr)
    partial = target.with_suffix(".partial")
    with urllib.request.urlopen(url, timeout=180) as resp, open(partial, "wb") as out:
        while chunk := resp.read(1 << 20):
            out.write(chunk)
    got = sha256_of(partial)
    if got != sha256:
        partial.unlink()
        sys.exit(f"fixtures: {filename} hash mismatch: expected {sha256}, got {got}")
    partial.replace(target)
    return target


def write_atomic(path: pathlib.Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def prompt_examples(markdown: str) -> dict:
    """Every example of Meta's prompt_format.md: the fenced block after an "Input Prompt Format"
    heading and the one after the "Model Response Format" heading that follows, verbatim."""
    lines = markdown.split("\n")
    examples, section, kind, i = [], None, None, 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith("##### "):
            kind = line[6:].strip()
        elif line == "```":
            end = lines.index("```", i + 1)
            body = "\n".join(lines[i + 1:end])
            i = end
            if kind == "Input Prompt Format":
                examples.append({"section": section, "input_prompt": body})
            elif kind == "Model Response Format":
                if not examples or "model_response" in examples[-1]:
                    sys.exit(f"fixtures: prompt_format.md: a response without its prompt in {section!r}")
                examples[-1]["model_response"] = body
            kind = None
        i += 1
    if not examples or any("model_response" not in e for e in examples):
        sys.exit("fixtures: prompt_format.md: no complete examples found")
    return {
        "source": f"{LLAMA_MODELS[2]}: llama_models/llama3_1/prompt_format.md",
        "examples": examples,
    }


def llama_models_fixtures(dest: pathlib.Path) -> None:
    wanted = [dest / name for name in LLAMA_MODELS_MEMBERS.values()] + [dest / EXAMPLES]
    if all(p.exists() for p in wanted):
        return
    with zipfile.ZipFile(fetch(LLAMA_MODELS)) as wheel:
        for member, name in LLAMA_MODELS_MEMBERS.items():
            write_atomic(dest / name, wheel.read(member))
        markdown = wheel.read("llama_models/llama3_1/prompt_format.md").decode("utf-8")
    examples = json.dumps(prompt_examples(markdown), indent=1, ensure_ascii=False)
    write_atomic(dest / EXAMPLES, examples.encode("utf-8"))


def oracle_venv(dest: pathlib.Path) -> None:
    """The template oracle's virtual environment `venv/`: made with `python3 -m venv`, then the
    pinned packages installed with hash checking. `venv/requirements.txt` is written last, so
    it marks a complete environment; one without it, or made for other pins, is made again."""
    venv = dest / "venv"
    marker = venv / "requirements.txt"
    if marker.exists() and marker.read_text() == ORACLE_REQUIREMENTS:
        return
    if venv.exists():
        shutil.rmtree(venv)
    print("fixtures: making the Jinja2 oracle's virtual environment", file=sys.stderr)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    except subprocess.CalledProcessError:
        sys.exit("fixtures: `python3 -m venv` failed (on Debian, install python3-venv)")
    pending = venv / "requirements.txt.partial"
    pending.write_text(ORACLE_REQUIREMENTS)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--require-hashes",
           "--no-deps", "-r", str(pending)]
    if subprocess.run(pip).returncode != 0:
        sys.exit("fixtures: installing the oracle's packages failed")
    pending.replace(marker)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = pathlib.Path(__file__).resolve().parent.parent
    parser.add_argument("--dest", default=str(root / ".fixtures"))
    parser.add_argument("--llama-src", action="store_true", help="also extract llama.cpp's source")
    args = parser.parse_args()
    dest = pathlib.Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    llama_models_fixtures(dest)
    oracle_venv(dest)
    wanted = [dest / name for name in MEMBERS.values()]
    src_dir = dest / "llama.cpp"
    if all(p.exists() for p in wanted) and (not args.llama_src or src_dir.exists()):
        return
    archive = fetch(LLAMA_CPP)
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
