"""MoA as one node of a larger LangGraph app whose state is `MessagesState`.

The app rewrites the user's question, asks the MoA subgraph, then post-processes. The MoA
graph reads `messages` and appends its answer, so no adapter is needed.
"""

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph import END, START, MessagesState, StateGraph

from langgraph_moa import create_moa_graph

moa = create_moa_graph("local-moa")


def clarify(state: MessagesState) -> dict:
    question = state["messages"][-1].text
    return {"messages": [HumanMessage(f"{question}\nAnswer in at most three sentences.")]}


def sign(state: MessagesState) -> dict:
    return {
        "messages": [
            AIMessage(f"{state['messages'][-1].text}\n\n(answered by a mixture of agents)")
        ]
    }


app = (
    StateGraph(MessagesState)
    .add_node("clarify", clarify)
    .add_node("moa", moa)
    .add_node("sign", sign)
    .add_edge(START, "clarify")
    .add_edge("clarify", "moa")
    .add_edge("moa", "sign")
    .add_edge("sign", END)
    .compile()
)

if __name__ == "__main__":
    result = app.invoke({"messages": [("user", "What is a hash table?")]})
    print(result["messages"][-1].text)
