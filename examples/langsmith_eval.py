"""Compare one model with MoA using `langsmith.evaluate`, through `evaluate_system`.

Offline by default: nothing is sent and the scores print here. With LANGSMITH_API_KEY set,
each system becomes a LangSmith experiment on the same examples (or pass a dataset name
instead of `data`), with every proposer, synthesis and aggregator step traced as a named run
("layer 1 / proposer 2 / <model>").
"""

import os
import uuid

from langsmith.schemas import Example

from langgraph_moa.eval import evaluate_system

QUESTIONS = [
    ("What is the capital of France? Answer briefly.", "Paris"),
    ("What is 12 times 12? Answer briefly.", "144"),
    ("Which planet is known as the Red Planet? Answer briefly.", "Mars"),
]
dataset = uuid.uuid4()  # a local dataset: nothing is uploaded
data = [
    Example(id=uuid.uuid4(), dataset_id=dataset, inputs={"question": q}, outputs={"expected": a})
    for q, a in QUESTIONS
]

online = bool(os.environ.get("LANGSMITH_API_KEY"))
for system in ("single:local:qwen2.5-coder-0.5b", "local-moa"):
    results = evaluate_system(system, data, cache_dir=".moa-langsmith-cache", upload_results=online)
    scores = [r["evaluation_results"]["results"][0].score for r in results]
    print(f"{system:32} {sum(scores)}/{len(scores)} correct")
