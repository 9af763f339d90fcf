"""The cgen measuring agent (standard library only; see rpc_agent/agent.py).

`python3 -m rpc_agent` from the source tree, or the single file agent.py
uploaded to a board and started with `python3 -I -S agent.py`.
"""
from .agent import AGENT_NAME, PROTOCOL_VERSION, Agent, main

__all__ = ["AGENT_NAME", "PROTOCOL_VERSION", "Agent", "main", "agent_file"]


def agent_file():
    """Path of the self-contained agent source, the file a host uploads."""
    import os
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "agent.py")
