"""Trace MoA runs to LangSmith and compare one model with MoA using `langsmith.evaluate`.

Offline by default: results stay local (langsmith still logs that it cannot reach its API;
the scores print all the same). With LANGSMITH_API_KEY set, every
proposer, synthesis and aggregator step shows up as a named run ("layer 1 / proposer 2 /
<model>") in your LangSmith project, and the experiment results are uploaded.
"""

import os
import uuid

from langsmith import evaluate, tracing_context
from langsmith.schemas import Example

from langgraph_moa import create_moa_graph
from langgraph_moa.models import build_model

QUESTIONS = [
    ("What is the capital of France?", "paris"),
    ("What is 12 times 12?", "144"),
    ("Which planet is known as the Red Planet?", "mars"),
]
dataset = uuid.uuid4()  # a local dataset: nothing is uploaded
data = [
    Example(id=uuid.uuid4(), dataset_id=dataset, inputs={"question": q}, outputs={"answer": a})
    for q, a in QUESTIONS
]

single = build_model("local:qwen2.5-coder-0.5b", {"temperature": 0.3, "max_tokens": 128})
moa = create_moa_graph("local-moa")


def ask_single(inputs: dict) -> dict:
    return {"answer": single.invoke(inputs["question"] + " Answer briefly.").text}


def ask_moa(inputs: dict) -> dict:
    state = moa.invoke({"messages": [("user", inputs["question"] + " Answer briefly.")]})
    return {"answer": state["messages"][-1].text}


def contains_answer(outputs: dict, reference_outputs: dict) -> bool:
    return reference_outputs["answer"] in outputs["answer"].lower()


# evaluate() traces its target runs; only send them when a LangSmith key is configured.
online = bool(os.environ.get("LANGSMITH_API_KEY"))
with tracing_context(enabled=online):
    for name, target in (("qwen alone", ask_single), ("local-moa", ask_moa)):
        results = evaluate(
            target,
            data=data,
            evaluators=[contains_answer],
            upload_results=online,
        )
        scores = [r["evaluation_results"]["results"][0].score for r in results]
        print(f"{name:12} {sum(bool(s) for s in scores)}/{len(scores)} correct")
