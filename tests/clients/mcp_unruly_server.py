"""An MCP server (the official Python SDK's MCPServer, over stdio) whose tools misbehave, for
corral's client tests: `crash` kills the server mid-call, `stall` never answers, `echo` works.

Usage: mcp_unruly_server.py [--silent-start]
With --silent-start it reads its input and never answers anything, `initialize` included.
"""
import os
import sys
import time

if "--silent-start" in sys.argv:
    print("unruly: not answering anything", file=sys.stderr, flush=True)
    for _ in sys.stdin:
        pass
    time.sleep(3600)

from mcp.server.mcpserver import MCPServer

server = MCPServer("unruly")


@server.tool(name="echo", description="Returns its text")
def echo(text: str) -> str:
    return text


@server.tool(name="crash", description="Kills this server while answering")
def crash() -> str:
    print("unruly: crashing on purpose", file=sys.stderr, flush=True)
    os._exit(3)


@server.tool(name="stall", description="Never answers")
def stall() -> str:
    time.sleep(3600)
    return "late"


server.run()
