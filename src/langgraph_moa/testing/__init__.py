"""Test doubles for users and for this package's own tests and benchmarks."""

from langgraph_moa.testing._uvicorn import BackgroundServer, free_port
from langgraph_moa.testing.fault_server import FaultProfile, FaultServer
from langgraph_moa.testing.scripted_server import ScriptedServer

__all__ = ["BackgroundServer", "FaultProfile", "FaultServer", "ScriptedServer", "free_port"]
