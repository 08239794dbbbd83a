"""Drives `corral serve` with the official `openai` Python client: tool-call round trips,
non-streaming and streaming, and the client's own error classes for client mistakes.

Usage: openai_roundtrip.py BASE_URL API_KEY MODEL
Prints one JSON object with what it saw; exits non-zero (with the reason) when corral's answers
are not what an OpenAI client expects.
"""
import json
import sys

import openai

base_url, api_key, model = sys.argv[1:4]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=300)
seen = {}

TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}]
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


def check(condition, what):
    if not condition:
        sys.exit(f"openai_roundtrip: {what}; seen so far: {json.dumps(seen, default=str)}")


# The model list.
ids = [m.id for m in client.models.list()]
seen["models"] = ids
check(model in ids, f"{model} is not in /v1/models")

# Non-streaming: a forced call, then its result, then the answer.
first = client.chat.completions.create(
    model=model, messages=QUESTION, tools=TOOLS, tool_choice="required", max_tokens=64,
    temperature=0,
)
choice = first.choices[0]
seen["first"] = {"finish_reason": choice.finish_reason, "content": choice.message.content,
                 "tool_calls": [c.model_dump() for c in choice.message.tool_calls or []],
                 "usage": first.usage.model_dump()}
check(choice.finish_reason == "tool_calls", "the forced call did not finish with tool_calls")
check(choice.message.content is None, "a reply of only calls has content")
call = choice.message.tool_calls[0]
check(call.function.name == "get_weather", "the call is not get_weather")
arguments = json.loads(call.function.arguments)
check(isinstance(arguments.get("city"), str), "the arguments have no city")
check(call.id and call.type == "function", "the call has no id or type")

history = QUESTION + [choice.message.model_dump(exclude_none=True)] + [
    {"role": "tool", "tool_call_id": c.id, "content": json.dumps({"sky": "sunny", "celsius": 24})}
    for c in choice.message.tool_calls
]
second = client.chat.completions.create(
    model=model, messages=history, tools=TOOLS, max_tokens=48, temperature=0,
)
answer = second.choices[0]
seen["second"] = {"finish_reason": answer.finish_reason, "content": answer.message.content,
                  "usage": second.usage.model_dump()}
check(answer.finish_reason in ("stop", "length", "tool_calls"), "no finish_reason")
cached = second.usage.prompt_tokens_details.cached_tokens
check(cached >= first.usage.prompt_tokens, f"the second request reused only {cached} tokens")

# Streaming: the same call as chunks, accumulated the way clients do.
stream = client.chat.completions.create(
    model=model, messages=QUESTION, tools=TOOLS, tool_choice="required", max_tokens=64,
    temperature=0, stream=True, stream_options={"include_usage": True},
)
calls, finish, usage, content = {}, None, None, ""
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta.content:
            content += c.delta.content
        for d in c.delta.tool_calls or []:
            entry = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
            if d.id:
                entry["id"] = d.id
            if d.function and d.function.name:
                entry["name"] += d.function.name
            if d.function and d.function.arguments:
                entry["arguments"] += d.function.arguments
        if c.finish_reason:
            finish = c.finish_reason
seen["stream"] = {"calls": calls, "finish_reason": finish, "content": content,
                  "usage": usage.model_dump() if usage else None}
check(finish == "tool_calls", "the streamed call did not finish with tool_calls")
check(content == "", "the streamed call leaked into content")
check(calls and calls[0]["name"] == "get_weather", "the streamed call is not get_weather")
check(isinstance(json.loads(calls[0]["arguments"]).get("city"), str), "streamed arguments lack city")
check(usage is not None and usage.completion_tokens > 0, "no usage chunk")

# Streaming text, then the client's error classes.
text = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=16,
    temperature=0, stream=True,
)
seen["stream_text"] = "".join(c.choices[0].delta.content or "" for c in text if c.choices)
check(seen["stream_text"].strip() != "", "a streamed answer had no text")

errors = {}
try:
    client.chat.completions.create(model="no-such-model", messages=QUESTION)
except openai.NotFoundError as e:
    errors["unknown_model"] = e.status_code
try:
    client.chat.completions.create(model=model, messages=[{"role": "wizard", "content": "x"}])
except openai.BadRequestError as e:
    errors["unknown_role"] = e.status_code
try:
    openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0).models.list()
except openai.AuthenticationError as e:
    errors["wrong_key"] = e.status_code
seen["errors"] = errors
check(errors == {"unknown_model": 404, "unknown_role": 400, "wrong_key": 401}, "wrong error classes")
print(json.dumps(seen, default=str))
