"""Pure text: the synthesis prompts, reference fencing, and reading answers for selection.

No model calls, no configuration: functions from strings to strings (or to votes), so the
rules the papers specify can be tested on their own.
"""
