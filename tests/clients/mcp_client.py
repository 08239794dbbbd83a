"""Drives `corral mcp serve` with the official MCP Python SDK's client over stdio.

Usage: mcp_client.py CORRAL_BIN [ARGS...]
Starts `CORRAL_BIN ARGS... mcp serve` the way any MCP host does, lists the tools, calls the
calculator (a good call, one the tool refuses, arguments the schema refuses, a tool that does
not exist) and prints one JSON object with what it saw; exits non-zero with the reason when an
answer is not what an MCP client expects.
"""
import asyncio
import json
import sys

from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

seen = {}


def check(condition, what):
    if not condition:
        sys.exit(f"mcp_client: {what}; seen so far: {json.dumps(seen, default=str)}")


def text_of(result):
    return "\n".join(block.text for block in result.content if block.type == "text")


async def main():
    corral, *extra = sys.argv[1:]
    params = StdioServerParameters(command=corral, args=[*extra, "mcp", "serve"])
    async with Client(params) as client:
        seen["server"] = client.server_info.name if client.server_info else None
        seen["protocol"] = client.protocol_version
        tools = (await client.list_tools()).tools
        seen["tools"] = sorted(t.name for t in tools)
        calc = next((t for t in tools if t.name == "calculator"), None)
        check(calc is not None, "no calculator tool")
        check(calc.input_schema.get("type") == "object", "the calculator's schema is not an object")
        check("expression" in calc.input_schema.get("properties", {}), "no `expression` parameter")

        good = await client.call_tool("calculator", {"expression": "1234 * 5678"})
        seen["good"] = {"is_error": good.is_error, "text": text_of(good)}
        check(not good.is_error, "a good call came back as an error")
        check("7006652" in text_of(good), "the product is not in the answer")

        refused = await client.call_tool("calculator", {"expression": "1 +"})
        seen["refused"] = {"is_error": refused.is_error, "text": text_of(refused)}
        check(refused.is_error, "a bad expression was not a tool error")

        bad_args = await client.call_tool("calculator", {"expression": 42})
        seen["bad_args"] = {"is_error": bad_args.is_error, "text": text_of(bad_args)}
        check(bad_args.is_error, "arguments against the schema were not refused")

        try:
            unknown = await client.call_tool("no_such_tool", {})
            seen["unknown"] = {"is_error": unknown.is_error, "text": text_of(unknown)}
            check(False, "an unknown tool was not a protocol error")
        except MCPError as e:
            seen["unknown"] = {"code": e.error.code, "message": e.error.message}
            check(e.error.code == -32602, "an unknown tool's error is not -32602 (invalid params)")
    print(json.dumps(seen))


asyncio.run(main())
