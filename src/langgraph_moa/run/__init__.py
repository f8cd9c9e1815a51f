"""One run's data and bookkeeping: state, context, call records, the call machinery, the ledger.

Below the variants and the graph: nothing here knows which variant is running.
"""
