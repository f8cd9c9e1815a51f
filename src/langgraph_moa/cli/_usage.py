"""Options that contradict each other: a usage error, exit code 2, not a failed run's 1.

click exits 2 for what its parser refuses (an unknown option, a value out of range); a
contradiction among options (``--preset`` with ``--config``, ``--aggregator`` with variant
select, a question given twice) is the same kind of mistake, found a step later. It exited 1,
the code of a run that failed, so a script could not tell "fix the command" from "try again".
"""

from __future__ import annotations

from langgraph_moa.errors import MoAConfigError

USAGE_EXIT = 2
"""The exit code of a usage error, as click's parser gives it."""


class OptionConflictError(MoAConfigError):
    """Options that cannot go together; the message names them and the fix.

    A `MoAConfigError` still, so callers of `build_config` outside the command line catch it
    as before; `moa` alone turns it into exit code 2.
    """
