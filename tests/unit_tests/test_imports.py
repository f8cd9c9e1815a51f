import langgraph_moa

EXPECTED_ALL = {
    "AGGREGATE_AND_SYNTHESIZE_PROMPT",
    "TAG_FINAL",
    "AggregatorConfig",
    "AggregatorFailedError",
    "AllProposersFailedError",
    "BudgetExhaustedError",
    "CallRecord",
    "ContextLengthError",
    "MissingAPIKeyError",
    "MoAChatModel",
    "MoAConfig",
    "MoAConfigError",
    "MoAContext",
    "MoAError",
    "MoAInput",
    "MoAInputError",
    "MoAOutput",
    "MoAState",
    "ModelResolutionError",
    "OpenAIEndpoint",
    "ProposerConfig",
    "RetrySettings",
    "SelfMoASeqConfig",
    "UsageSummary",
    "__version__",
    "create_moa_graph",
    "final_answer_only",
    "inject_references",
    "list_presets",
}


def test_all_is_the_public_surface():
    assert set(langgraph_moa.__all__) == EXPECTED_ALL
    for name in langgraph_moa.__all__:
        assert hasattr(langgraph_moa, name)
