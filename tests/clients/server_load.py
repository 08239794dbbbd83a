"""A bounded loopback load test of `corral serve` with the official `openai` client.

Usage: server_load.py BASE_URL API_KEY MODEL [REQUESTS_PER_CLIENT]
For 1, 4 and 16 concurrent clients, each sends REQUESTS_PER_CLIENT (default 4) short tool-call
completions (`tool_choice: required`, at most 32 tokens, greedy) one after another; prints
requests/s and p50/p99 latency. Then one 10-turn conversation, resent whole each turn as clients
do, with each turn's prompt and cached tokens. Prints one JSON object.
"""
import json
import statistics
import sys
import threading
import time

import openai

base_url, api_key, model = sys.argv[1:4]
per_client = int(sys.argv[4]) if len(sys.argv) > 4 else 4
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]
CITIES = ["Paris", "Berlin", "Madrid", "Rome", "Lisbon", "Vienna", "Prague", "Oslo"]


def percentile(values, p):
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def load(clients):
    latencies, failures = [], []
    lock = threading.Lock()

    def worker(n):
        client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=600)
        for i in range(per_client):
            city = CITIES[(n + i) % len(CITIES)]
            started = time.perf_counter()
            try:
                reply = client.chat.completions.create(
                    model=model, tools=TOOLS, tool_choice="required", max_tokens=32,
                    temperature=0,
                    messages=[{"role": "user", "content": f"What is the weather in {city}?"}])
                ok = reply.choices[0].finish_reason == "tool_calls"
            except Exception as e:  # counted, reported
                ok, reply = False, e
            with lock:
                (latencies if ok else failures).append(time.perf_counter() - started)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {"clients": clients, "requests": len(latencies), "failed": len(failures),
            "requests_per_s": round(len(latencies) / wall, 2),
            "p50_s": round(percentile(latencies, 50), 3),
            "p99_s": round(percentile(latencies, 99), 3), "wall_s": round(wall, 2)}


def conversation(turns=10):
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=600)
    messages = [{"role": "system", "content": "You are a helpful, brief assistant."}]
    rows = []
    for turn in range(turns):
        messages.append({"role": "user", "content": f"Turn {turn + 1}: name one fact about {CITIES[turn % len(CITIES)]}."})
        started = time.perf_counter()
        reply = client.chat.completions.create(model=model, messages=messages, max_tokens=24,
                                               temperature=0)
        usage = reply.usage
        rows.append({"turn": turn + 1, "prompt": usage.prompt_tokens,
                     "cached": usage.prompt_tokens_details.cached_tokens,
                     "seconds": round(time.perf_counter() - started, 3)})
        messages.append(reply.choices[0].message.model_dump(exclude_none=True))
    return {"turns": rows, "prompt_tokens": sum(r["prompt"] for r in rows),
            "cached_tokens": sum(r["cached"] for r in rows)}


result = {"load": [load(c) for c in (1, 4, 16)], "conversation": conversation()}
print(json.dumps(result))
