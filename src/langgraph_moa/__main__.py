"""``python -m langgraph_moa`` runs the `moa` command (its light entry point: see `cli`)."""

from langgraph_moa.cli import main

main()
