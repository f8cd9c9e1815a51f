"""A LangChain agent whose model is a Mixture-of-Agents, with a real tool, on the local models.

`langchain.agents.create_agent` runs the usual loop: the model answers with a tool call, the
agent runs the tool, the model reads the result and answers. Here every model turn is a MoA
run over the packaged Qwen2.5-Coder models (llama.cpp applies their tool-call template):
both proposers see the tool, the aggregator sees which call each proposer wanted and makes
the call itself. No API key and no network.

    python examples/agent_tools.py
    python examples/agent_tools.py --preset local-vote "What is 1234 * 5678?"

With ``local-moa`` the aggregator makes the call after reading the proposers' wishes; with
``local-vote`` the proposals' tool calls are voted on (name and arguments).
"""

from __future__ import annotations

import argparse
import ast
import operator
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool

from langgraph_moa import MoAChatModel, MoAConfig

_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
}


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.operand))
    raise ValueError(f"unsupported expression: {ast.dump(node)}")


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly, e.g. '1234 * 5678' or '(3 + 4) ** 2'."""
    try:
        value = _evaluate(ast.parse(expression, mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError) as exc:
        return f"error: {exc}"
    return str(int(value) if float(value).is_integer() else value)


SYSTEM = (
    "You are a careful assistant. For arithmetic, call the calculator tool with the "
    "expression; once a tool result is in the conversation, answer the user with it."
)


def greedy(config: str | MoAConfig) -> MoAConfig:
    """The config with its aggregator greedy too (MoAChatModel's temperature is the proposers').

    local-moa's aggregator samples at 0.3: so sampling, it answered "What is 1234 * 5678?"
    from memory (704,102) instead of calling the calculator.
    """
    config = MoAConfig.from_preset(config) if isinstance(config, str) else config
    if config.aggregator is None:  # select: the answer is a proposal
        return config
    aggregator = config.aggregator.model_copy(update={"temperature": 0.0})
    return config.with_overrides(aggregator=aggregator)


def build_agent(config: str | MoAConfig = "local-moa", max_tokens: int = 128) -> Any:
    """Return a LangChain agent whose model is MoA (`config`: a preset or a MoAConfig).

    The proposers answer greedily too, unless one draws several samples (local-vote): those
    are sampled, since greedy samples are one answer repeated (the config refuses them).
    """
    config = greedy(config)
    sampled = any(proposer.samples > 1 for proposer in config.proposers)
    temperature = None if sampled else 0.0
    model = MoAChatModel(config=config, max_tokens=max_tokens, temperature=temperature)
    return create_agent(model, [calculator], system_prompt=SYSTEM)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="?", default="What is 1234 * 5678?")
    parser.add_argument("--preset", default="local-moa")
    args = parser.parse_args()
    result = build_agent(args.preset).invoke({"messages": [("user", args.question)]})
    for message in result["messages"]:
        if isinstance(message, AIMessage) and message.tool_calls:
            for call in message.tool_calls:
                print(f"-> {call['name']}({call['args']})")
        elif isinstance(message, ToolMessage):
            print(f"<- {message.content}")
    print(result["messages"][-1].text)


if __name__ == "__main__":
    main()
