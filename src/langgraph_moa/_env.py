"""The 0/1 switches that the environment sets: read one way, and anything else refused.

Each switch was read as "equal to the one value that flips it", so ``MOA_GC_FREEZE=false``,
``MOA_DIRECT_CALLS=off`` or ``LANGGRAPH_MOA_SHARE_CORES=true`` silently left the switch as
it was; the operator who set it saw no effect and no word.
"""

from __future__ import annotations

import os

from langgraph_moa._redact import clip
from langgraph_moa.errors import MoAConfigError

SHOWN_CHARS = 40
"""The most characters of a refused variable's value repeated in the refusal ("..." included)."""


def switch_from_env(name: str) -> bool | None:
    """Read the switch `name`: True for 1, False for 0, None when unset or blank.

    Raises:
        MoAConfigError: the variable holds anything else; the sentence names it.
    """
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    if value not in ("0", "1"):
        shown = clip(value, SHOWN_CHARS, mark="...")
        raise MoAConfigError(
            f"{name} must be 0 or 1, got {shown!r}: set one or unset it for the default."
        )
    return value == "1"
