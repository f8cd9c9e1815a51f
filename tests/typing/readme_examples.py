"""The README's Python examples as a typed user writes them, checked by `make lint`.

Not run, only type-checked (mypy --strict, the Makefile's lint target): a public annotation
that refuses what the README does, or hands the user an Any where a type is known, fails here.
"""

from typing import assert_type

from langchain_core.messages import AnyMessage, BaseMessage, HumanMessage
from langchain_core.tools import tool
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.sqlite import SqliteSaver

from langgraph_moa import (
    AnswerStream,
    MoAChatModel,
    MoAConfig,
    MoAContext,
    MoAError,
    MoAInput,
    RunEvents,
    create_moa_graph,
    final_answer_only,
    open_checkpointer,
)


@tool
def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    return a + b


def quickstart() -> None:
    config = MoAConfig(
        proposers=["openai:gpt-4o-mini", "together:Qwen/Qwen2.5-72B-Instruct-Turbo"],
        aggregator="openai:gpt-4o",
        layers=3,
    )
    assert_type(MoAConfig.from_preset("moa-lite"), MoAConfig)
    graph = create_moa_graph(config)
    graph.invoke({"messages": [("user", "Explain X")]})  # the README's tuple form
    graph.invoke({"messages": "Explain X"})  # one message, as add_messages takes it
    graph.invoke({"messages": [HumanMessage("Explain X"), {"role": "user", "content": "Y"}]})


def per_run_settings() -> None:  # the README's block, as written
    graph = create_moa_graph("local-moa")  # what graphs/moa.py registers
    question: MoAInput = {"messages": [("user", "Explain X")]}
    graph.invoke(question, context=MoAContext(preset="moa-lite", layers=3))


def per_run_settings_of_a_held_history() -> None:
    graph = create_moa_graph("local-moa")
    history: list[BaseMessage] = [HumanMessage("Explain X")]
    question: MoAInput = {"messages": history}  # a list of messages a caller already holds
    graph.invoke(question, context=MoAContext(preset="moa-lite", layers=3))


def held_histories(history: list[BaseMessage], parents: list[AnyMessage]) -> None:
    graph = create_moa_graph("local-moa")
    graph.invoke({"messages": history})  # what LangChain's helpers return
    graph.invoke({"messages": parents})  # a parent graph's MessagesState["messages"]
    graph.invoke({"messages": tuple(history)})  # a Sequence: the graph reads it as a list


def chat_model() -> str:
    llm = MoAChatModel(config="local-moa", max_tokens=160)
    for chunk in llm.stream("Name three primary colours."):
        print(chunk.text, end="")
    llm.bind_tools([add], tool_choice="auto", parallel_tool_calls=False)
    return llm.invoke("Why is the sky blue?").text


def durable() -> None:
    saver = open_checkpointer("sqlite:///moa.db")
    assert_type(saver, SqliteSaver | PostgresSaver)
    graph = create_moa_graph("moa-lite", checkpointer=saver)
    try:
        graph.invoke({"messages": [("user", "X")]}, {"configurable": {"thread_id": "1"}})
    except MoAError:
        graph.invoke(None, {"configurable": {"thread_id": "1"}})  # resume the thread
    finally:
        saver.conn.close()  # the caller owns the connection (open_checkpointer's docstring)


def streaming() -> None:  # the README's block, as written
    graph = create_moa_graph("moa-lite")  # or the Quickstart's graph
    question: MoAInput = {"messages": [("user", "Explain X")]}
    for part in graph.stream(question, stream_mode=["messages", "custom"], version="v2"):
        if part["type"] == "messages":
            token, metadata = part["data"]
            if final_answer_only(metadata):
                print(token.text, end="")  # the aggregator's tokens, as generated
        elif part["type"] == "custom" and part["data"]["event"] == "discarded":
            print("\n[abandoned]")  # drop all but the first part["data"]["keep"] characters shown
        elif part["type"] == "custom":
            print(part["data"])  # {"event": "started"|"finished"|"failed", "layer": ...}


def answer_stream_and_run_events() -> None:  # the README's Streaming prose, typed
    graph = create_moa_graph("moa-lite")
    question: MoAInput = {"messages": [("user", "Explain X")]}
    for piece in AnswerStream(graph, question):  # the input as the graph takes it
        print(piece, end="")
    for event in RunEvents(graph, question):
        print(event["event"])
