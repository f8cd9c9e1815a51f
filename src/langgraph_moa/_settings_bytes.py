"""Reading a settings file's bytes: no more than any settings file needs.

Config files and price tables (`config._files`) and calibration files (`text._selection`)
are read through here, so one limit and one refusal hold for every file a person names.
"""

from __future__ import annotations

from pathlib import Path

MAX_CONFIG_BYTES = 1 << 20
"""The largest settings file read (1 MiB). The largest preset is under 2 KB; a 36 MB file of
2,000,000 proposers took 72 s and 2 GB of memory to parse before validation refused it."""


def read_settings_bytes(path: Path, named: str) -> bytes:
    """Return the bytes of the file at `path`, read no further than `MAX_CONFIG_BYTES`.

    Raises:
        OSError: as opening or reading the file does.
        ValueError: the file is larger; the sentence (no final stop) starts with `named`.
    """
    with path.open("rb") as handle:
        raw = handle.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ValueError(
            f"{named} is larger than {MAX_CONFIG_BYTES} bytes, more than any settings file "
            "needs: check that it is the right file"
        )
    return raw
