#!/usr/bin/env python3
"""How well a model uses corral's builtin tools: 20 small tasks with tool_choice=auto.

For each task it runs `corral run --json` and scores three things:
  call    the first call names the expected tool
  args    that call's arguments were valid (its result came back ok, and any expected
          argument value was given)
  result  that call's result holds the expected answer (the arguments meant the right thing;
          for the clock tasks, the same as args)
  answer  the text after the last result contains the expected answer

Usage: scripts/tool_eval.py [--model NAME_OR_PATH] [--corral PATH] [--threads N] [--json OUT]
Prints one line per task and a summary; exit 0 unless corral itself could not run.
The clock tasks have no fixed answer: their answer counts when it repeats the date, the
weekday or the HH:MM the tool returned.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

CALC, CLOCK, JSON_TOOL = "calculator", "clock", "json"

# (task, tool, expected argument fragments {name: value-substring}, expected answer or None)
TASKS = [
    ("What is 1234 * 5678?", CALC, {}, "7006652"),
    ("Compute 17.5% of 2400.", CALC, {}, "420"),
    ("What is (15 + 27) * 3 - 8?", CALC, {}, "118"),
    ("What is 2 to the power of 20?", CALC, {}, "1048576"),
    ("What is 98765 - 43210?", CALC, {}, "55555"),
    ("How much is 144 / 12 + 7 * 3?", CALC, {}, "33"),
    ("A pizza costs 12.50 and I buy 4 of them. How much do I pay in total?", CALC, {}, "50"),
    ("Divide 1 by 8 and give the decimal result.", CALC, {}, "0.125"),
    ("What time is it in Tokyo right now?", CLOCK, {"timezone": "Asia/Tokyo"}, None),
    ("What is today's date in UTC?", CLOCK, {}, None),
    ("What day of the week is it in New York?", CLOCK, {"timezone": "America/New_York"}, None),
    ("Tell me the current time in the Europe/Paris time zone.", CLOCK, {"timezone": "Europe/Paris"}, None),
    ("What's the time in London at the moment?", CLOCK, {"timezone": "Europe/London"}, None),
    ("What is the current time in Sydney, Australia?", CLOCK, {"timezone": "Australia/Sydney"}, None),
    ('In the JSON document {"name": "Ada", "age": 36}, what is the value of "age"?', JSON_TOOL, {}, "36"),
    ('How many keys does this JSON object have: {"a": 1, "b": 2, "c": 3}?', JSON_TOOL, {}, "3"),
    ('Get the name of the first user in {"users": [{"name": "Lin"}, {"name": "Bo"}]}.', JSON_TOOL, {}, "Lin"),
    ('How many elements are in the array "list" of {"list": [4, 8, 15, 16, 23, 42]}?', JSON_TOOL, {}, "6"),
    ('What is the JSON type of the value at /items in {"items": [1, 2, 3]}?', JSON_TOOL, {}, "array"),
    ('Minify this JSON document: { "x" : 1 ,  "y" : [ 1, 2 ] }', JSON_TOOL, {}, '{"x":1,"y":[1,2]}'),
]

WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def clock_facts(result):
    """Strings an answer may repeat from a clock result: the date, HH:MM, the weekday."""
    facts = []
    try:
        data = json.loads(result)
    except ValueError:
        data = {}
    stamp = str(data.get("datetime", result))
    m = re.search(r"(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})", stamp)
    if m:
        facts += [m.group(1), m.group(2)]
        hour, minute = int(m.group(2)[:2]), m.group(2)[3:]
        facts.append(f"{(hour % 12) or 12}:{minute}")
    low = result.lower()
    facts += [d for d in WEEKDAYS if d in low]
    return facts


def normalise(text):
    return re.sub(r"(?<=\d),(?=\d{3})", "", text).replace(" ", "").lower()


def run_task(corral, model, threads, task):
    question, tool, want_args, want_answer = task
    cmd = [corral, "run", "--json", "--threads", str(threads), "--ctx", "4096",
           "--tools", "calculator,clock,json", "--tool-choice", "auto", "--max-steps", "4"]
    if model:
        cmd += ["--model", model]
    cmd.append(question)
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - started
    events = []
    for line in proc.stdout.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            pass
    calls = [e for e in events if e.get("type") == "tool_call"]
    results = [e for e in events if e.get("type") == "tool_result"]
    finished = next((e for e in events if e.get("type") == "turn_finished"), {})
    answer, after_result = "", not results
    for e in events:
        if e.get("type") == "tool_result":
            answer, after_result = "", True
        elif e.get("type") == "text" and after_result:
            answer += e.get("delta", "")
    first = calls[0] if calls else None
    called = bool(first) and first.get("name") == tool
    first_result = next((r for r in results if first and r.get("id") == first.get("id")), None)
    args_ok = called and bool(first_result and first_result.get("ok"))
    if args_ok:
        given = first.get("arguments") or {}
        for key, value in want_args.items():
            if value.lower() not in str(given.get(key, "")).lower():
                args_ok = False
    content = first_result.get("content", "") if first_result else ""
    if want_answer is None:
        result_ok = args_ok
    else:
        result_ok = args_ok and normalise(want_answer) in normalise(content)
    if want_answer is None:
        facts = clock_facts(first_result.get("content", "")) if first_result else []
        answer_ok = any(f.lower() in answer.lower() for f in facts)
    else:
        answer_ok = bool(results) and normalise(want_answer) in normalise(answer)
    return {
        "task": question,
        "tool": tool,
        "called": [c.get("name") for c in calls],
        "arguments": first.get("arguments") if first else None,
        "call_ok": called,
        "args_ok": args_ok,
        "result_ok": result_ok,
        "answer_ok": answer_ok,
        "answer": answer.strip(),
        "stop": finished.get("stop"),
        "exit": proc.returncode,
        "seconds": round(seconds, 1),
        "stderr": proc.stderr.strip()[-300:] if proc.returncode not in (0, 3) else "",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model name or GGUF path (default model if unset)")
    parser.add_argument("--corral", default=os.environ.get("CORRAL", "corral"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", dest="json_out", default=None, help="also write rows as JSON here")
    args = parser.parse_args()
    rows = []
    for i, task in enumerate(TASKS, 1):
        try:
            row = run_task(args.corral, args.model, args.threads, task)
        except (OSError, subprocess.TimeoutExpired) as e:
            print(f"cannot run {args.corral}: {e}", file=sys.stderr)
            return 1
        rows.append(row)
        marks = "".join(
            "+" if row[k] else "-" for k in ("call_ok", "args_ok", "result_ok", "answer_ok"))
        print(f"{i:2} {marks} {row['seconds']:6.1f}s {row['tool']:10} called={row['called']} "
              f"answer={row['answer'][:70]!r}", flush=True)
        if row["stderr"]:
            print(f"   stderr: {row['stderr']}", flush=True)
    n = len(rows)
    for key, label in (("call_ok", "right tool"), ("args_ok", "valid arguments"),
                       ("result_ok", "result holds the answer"), ("answer_ok", "right answer")):
        print(f"{label}: {sum(r[key] for r in rows)}/{n}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
