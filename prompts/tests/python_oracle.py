"""The independent oracle of the `python_oracle` test: Python's Jinja2 and Meta's tool_utils.py.

Run by the test with the fixtures' virtual environment (`python3 scripts/fixtures.py` makes it):

    python python_oracle.py REQUEST.json ANSWER.json

REQUEST holds `templates` (name -> path of an official chat template), `renders` (each a
`template` name and the `context` to render it with), `tool_utils` (the path of Meta's
`llama3/tool_utils.py`) and `outputs` (model outputs to parse). ANSWER gets, in the same order,
`renders` (`{"text": …}` or `{"error": …}`) and `outputs` (`{"call": [name, arguments]}`,
`{"call": null}` or `{"raised": exception type}`). Floats in arguments are written as
`{"f64_bits": N}`, their IEEE 754 bits, so no float is rounded on the way back.

Templates run the way Hugging Face `transformers` runs chat templates: a sandboxed, immutable
environment with `trim_blocks`, `lstrip_blocks` and loop controls; a `tojson` filter that is
`json.dumps` keeping non-ASCII text; `raise_exception`, which fails the render; `strftime_now`,
today's date with Python's `strftime`.
"""

import contextlib
import datetime
import importlib.util
import io
import json
import struct
import sys
import types

try:
    import jinja2
    import jinja2.ext
    import jinja2.sandbox
except ImportError as error:
    sys.exit(f"python_oracle: {error}: run `python3 scripts/fixtures.py` to make the virtual environment")


def template_environment() -> jinja2.Environment:
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent,
                          separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.datetime.now().strftime(format)

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def render_all(templates: dict, renders: list) -> list:
    env = template_environment()
    compiled = {}
    for name, path in templates.items():
        with open(path, encoding="utf-8") as f:
            compiled[name] = env.from_string(f.read())
    answers = []
    for case in renders:
        try:
            answers.append({"text": compiled[case["template"]].render(**case["context"])})
        except jinja2.exceptions.TemplateError as error:
            answers.append({"error": str(error)})
    return answers


def load_tool_utils(path: str) -> types.ModuleType:
    """Meta's tool_utils.py, imported by path as `llama_models.llama3.tool_utils`. Its one
    import, `from ..datatypes import …`, names types only its encoder uses; empty stand-ins are
    enough for the parsing functions."""
    for name in ("llama_models", "llama_models.llama3"):
        package = types.ModuleType(name)
        package.__path__ = []
        sys.modules[name] = package
    datatypes = types.ModuleType("llama_models.datatypes")
    for name in ("BuiltinTool", "RecursiveType", "ToolCall", "ToolPromptFormat"):
        setattr(datatypes, name, type(name, (), {}))
    sys.modules["llama_models.datatypes"] = datatypes
    spec = importlib.util.spec_from_file_location("llama_models.llama3.tool_utils", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exact(value):
    """`value` with every float replaced by `{"f64_bits": its bits}`."""
    if isinstance(value, float):
        return {"f64_bits": struct.unpack("<Q", struct.pack("<d", value))[0]}
    if isinstance(value, dict):
        return {key: exact(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [exact(item) for item in value]
    return value


def parse_with_meta(tool_utils: types.ModuleType, text: str) -> dict:
    """A model output as Meta's reference decoder reads a Llama 3.1 reply with ToolUtils: a
    leading `<|python_tag|>` and a trailing `<|eot_id|>`/`<|eom_id|>` come off; a custom call
    (`<function=…>`, a JSON object, a Python list of calls: the first one) is looked for first,
    then a builtin `name.call(query="…")`; after `<|python_tag|>`, anything else is code."""
    body = text
    ipython = body.startswith("<|python_tag|>")
    if ipython:
        body = body[len("<|python_tag|>"):]
    for stop in ("<|eot_id|>", "<|eom_id|>"):
        if body.endswith(stop):
            body = body[:-len(stop)]
            break
    utils = tool_utils.ToolUtils
    try:
        # The custom-call parser reports JSON it cannot read by printing it.
        with contextlib.redirect_stdout(io.StringIO()):
            custom = utils.maybe_extract_custom_tool_call(body)
    except Exception as error:  # Meta's parser raises on some inputs: that is its answer.
        return {"raised": type(error).__name__}
    if custom is not None:
        return {"call": exact(list(custom))}
    builtin = utils.maybe_extract_builtin_tool_call(body)
    if builtin is not None:
        name, query = builtin
        return {"call": [name, {"query": query}]}
    if ipython:
        return {"call": ["code_interpreter", {"code": body}]}
    return {"call": None}


def main() -> None:
    request_path, answer_path = sys.argv[1:3]
    with open(request_path, encoding="utf-8") as f:
        request = json.load(f)
    tool_utils = load_tool_utils(request["tool_utils"])
    answer = {
        "renders": render_all(request["templates"], request["renders"]),
        "outputs": [parse_with_meta(tool_utils, text) for text in request["outputs"]],
    }
    with open(answer_path, "w", encoding="utf-8") as f:
        json.dump(answer, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
