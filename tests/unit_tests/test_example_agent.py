"""examples/agent_tools.py's agent answers greedily, as tests/integration_tests rely on.

MoAChatModel's `temperature` is the proposers' only: the example set it to 0 and believed
every call greedy, while local-moa's aggregator sampled at 0.3, and so sampling it once
answered "What is 1234 * 5678?" from memory (704,102) instead of calling the calculator
(tests/integration_tests/test_doc_examples_local.py, one run in two). And its docstring's
`--preset local-vote` failed before any call: the proposers' temperature 0 made local-vote's
two samples one answer repeated, which the config refuses.
"""

import pytest

from langgraph_moa import MoAConfig
from tests.helpers import load_agent_example


@pytest.mark.parametrize("preset", ["local-moa", "local-vote"])
def test_every_answering_call_of_the_agent_example_is_greedy(preset, monkeypatch):
    example = load_agent_example()
    made = {}
    real = example.MoAChatModel

    def spy(**kwargs):
        made.update(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(example, "MoAChatModel", spy)
    example.build_agent(preset)
    config = made["config"]
    config = MoAConfig.from_preset(config) if isinstance(config, str) else config
    sampled = any(proposer.samples > 1 for proposer in config.proposers)
    assert made["temperature"] == (None if sampled else 0.0)  # greedy samples are refused
    assert config.aggregator is None or config.aggregator.temperature == 0.0, config.aggregator
    assert config.name == preset  # the preset's models and caps, only the temperature changed
