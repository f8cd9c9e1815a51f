"""Test doubles for users and for this package's own tests and benchmarks."""

from langgraph_moa.testing._uvicorn import BackgroundServer, free_port
from langgraph_moa.testing.fault_server import FaultProfile, FaultServer

__all__ = ["BackgroundServer", "FaultProfile", "FaultServer", "free_port"]
