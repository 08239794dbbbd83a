# corral's notebook driver, run by CPython inside the wasm sandbox as `python -c`.
#
# It keeps one namespace for the whole conversation and runs each cell the host sends in it.
# Protocol, one line each way per cell:
#   host -> driver (stdin):  {"id": N, "code": "..."}              (JSON, UTF-8, one line)
#   driver -> host (stdout): <NONCE> {"id": N, "stdout", "stderr", "result", "error", "dropped"}
# and `<NONCE> ready` once, before the first cell. The nonce comes as argv[1]. Anything else on
# stdout is code that wrote to the real file descriptor; the host shows it as output. Code in a
# cell can learn the nonce (it shares the process), so the host takes only the frame answering
# the random id it sent: a forged frame can change what its own cell shows, never a later cell's. Captured output is kept up to argv[2] characters per
# stream (the rest is counted, not kept), so a flood cannot fill the sandbox's memory; the
# result's repr and the traceback are cut the same way. Code that calls input() reads an empty
# stdin: the real one carries the host's requests.
import ast
import io
import json
import linecache
import os
import sys
import traceback

NONCE = sys.argv[1]
KEEP = int(sys.argv[2])
OUT = sys.stdout.buffer
IN = sys.stdin.buffer


class Capped(io.TextIOBase):
    """A text stream that keeps its first KEEP characters and counts the rest."""

    def __init__(self):
        self.parts = []
        self.kept = 0
        self.dropped = 0

    def writable(self):
        return True

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        room = KEEP - self.kept
        if room > 0:
            piece = text[:room]
            self.parts.append(piece)
            self.kept += len(piece)
        self.dropped += max(0, len(text) - max(room, 0))
        return len(text)

    def value(self):
        return "".join(self.parts)


def cap(text, dropped, key):
    if text is not None and len(text) > KEEP:
        dropped[key] = len(text) - KEEP
        return text[:KEEP]
    return text


def run(code, number, namespace):
    out, err = Capped(), Capped()
    result = None
    error = None
    name = f"<cell {number}>"
    linecache.cache[name] = (len(code), None, code.splitlines(True), name)
    sys.stdout, sys.stderr = out, err
    try:
        tree = ast.parse(code, name, "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, name, "exec"), namespace)
        if last is not None:
            value = eval(compile(last, name, "eval"), namespace)
            if value is not None:
                namespace["_"] = value
                result = repr(value)
    except BaseException as e:  # SystemExit and KeyboardInterrupt end the cell, not the driver
        if isinstance(e, SyntaxError):
            lines = traceback.format_exception_only(type(e), e)
        else:
            # Leave out the driver's own frame.
            lines = traceback.format_exception(type(e), e, e.__traceback__.tb_next)
        error = "".join(lines)
    finally:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    dropped = {"stdout": out.dropped, "stderr": err.dropped}
    return {
        "stdout": out.value(),
        "stderr": err.value(),
        "result": cap(result, dropped, "result"),
        "error": cap(error, dropped, "error"),
        "dropped": {k: v for k, v in dropped.items() if v},
    }


def main():
    try:
        os.chdir("/scratch")  # the conversation's scratch folder, when the host gives one
    except OSError:
        pass
    sys.stdin = io.StringIO("")
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    number = 0
    OUT.write(NONCE.encode() + b" ready\n")
    OUT.flush()
    while True:
        line = IN.readline()
        if not line:
            return
        number += 1
        cell_id = None
        try:
            request = json.loads(line)
            cell_id = request["id"]
            code = request["code"]
        except Exception as e:
            reply = {"stdout": "", "stderr": "", "result": None, "dropped": {},
                     "error": f"corral driver: bad request ({e})"}
        else:
            reply = run(code, number, namespace)
        reply["id"] = cell_id
        OUT.write(NONCE.encode() + b" " + json.dumps(reply, ensure_ascii=False).encode() + b"\n")
        OUT.flush()


main()
