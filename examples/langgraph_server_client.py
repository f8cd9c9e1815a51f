"""MoA on LangGraph server: configure an assistant, stream a run, continue the thread.

LANGGRAPH_CLI_NO_ANALYTICS=1 langgraph dev --no-browser --port 2025   # in another terminal
python examples/langgraph_server_client.py
"""

import asyncio

from langgraph_sdk import get_client


async def main() -> None:
    client = get_client(url="http://127.0.0.1:2025")
    assistant = await client.assistants.create(
        graph_id="moa",
        name="two-layer local MoA",
        context={"layers": 2, "max_tokens": 96, "aggregator_max_tokens": 160},
    )
    thread = await client.threads.create()
    async for part in client.runs.stream(
        thread["thread_id"],
        assistant["assistant_id"],
        input={"messages": [{"role": "user", "content": "My name is Ada. Greet me briefly."}]},
        stream_mode="messages-tuple",
    ):
        if part.event == "messages":
            chunk, metadata = part.data
            if "moa:final" in (metadata.get("tags") or []):
                print(chunk["content"], end="", flush=True)
    print()
    second = await client.runs.wait(
        thread["thread_id"],
        assistant["assistant_id"],
        input={"messages": [{"role": "user", "content": "What is my name?"}]},
    )
    print(second["messages"][-1]["content"])


asyncio.run(main())
