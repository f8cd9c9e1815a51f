"""Any OpenAI client can use MoA: start `moa serve`, then point the client at it.

moa serve --preset local-moa --port 8000        # in another terminal
python examples/openai_client.py
"""

import openai

client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
print([m.id for m in client.models.list()])

reply = client.chat.completions.create(
    model="local-moa",
    messages=[{"role": "user", "content": "In one sentence: what is a mixture of agents?"}],
)
print(reply.choices[0].message.content)
print("usage over every inner call:", reply.usage)
for call in reply.model_extra["moa"]["calls"]:
    print(f"  {call['role']:10} layer {call['layer']} {call['model']:20} {call['latency_s']:.1f}s")

stream = client.chat.completions.create(
    model="local-moa",
    messages=[{"role": "user", "content": "Name three primary colours."}],
    stream=True,
    stream_options={"include_usage": True},
    extra_body={"layers": 2},  # per-request overrides: layers, proposers, aggregator, samples
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
print()
