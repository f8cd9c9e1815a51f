import langgraph_moa

EXPECTED_ALL = {
    "AGGREGATE_AND_SYNTHESIZE_PROMPT",
    "DEFAULT_PRESET",
    "TAG_FINAL",
    "AggregatorConfig",
    "AggregatorFailedError",
    "AllProposersFailedError",
    "AnswerStream",
    "Budget",
    "BudgetExhaustedError",
    "CallCache",
    "CallRecord",
    "CallTimeoutError",
    "ContextLengthError",
    "EmptyResponseError",
    "EvalDatasetError",
    "LimitExceededError",
    "LocalModelError",
    "LocalRuntimeError",
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
    "ModelNotAllowedError",
    "ModelResolutionError",
    "OpenAIEndpoint",
    "ProposerConfig",
    "RequestLimits",
    "RequestTimeoutError",
    "RetryPastDeadlineError",
    "RetrySettings",
    "SQLiteCallCache",
    "SelectionConfig",
    "SelfMoASeqConfig",
    "StragglerCancelledError",
    "StreamBrokenError",
    "StructuredOutputError",
    "UsageSummary",
    "__version__",
    "create_moa_graph",
    "final_answer_only",
    "inject_references",
    "list_presets",
    "load_config",
    "open_checkpointer",
}


def test_all_is_the_public_surface():
    assert set(langgraph_moa.__all__) == EXPECTED_ALL
    for name in langgraph_moa.__all__:
        assert hasattr(langgraph_moa, name)


def test_all_is_sorted_and_exports_every_public_error():
    import inspect

    from langgraph_moa import errors

    def isort_style(name: str) -> tuple[int, str]:  # CONSTANTS, then Classes, then functions
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert langgraph_moa.__all__ == sorted(langgraph_moa.__all__, key=isort_style)
    public_errors = {
        name
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, Exception) and not name.startswith("_")
    }
    assert public_errors <= set(langgraph_moa.__all__)
    assert all(issubclass(getattr(errors, n), errors.MoAError) for n in public_errors)
