"""What `moa serve`'s options name: the trusted proxies and the path prefix.

Read by the CLI as the command line is parsed (a usage error, exit code 2) and by the
server itself (`_guard`), for a caller of `serve` from Python; kept free of the ``serve``
extra, so that the CLI checks them without FastAPI or uvicorn installed.
"""

import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any


def proxies_problem(entries: Sequence[str]) -> str | None:
    """Say why `entries` cannot name the trusted proxies; None if they can.

    One check for the CLI (a usage error) and `ServeSecurity` (a caller from Python): uvicorn
    trusts every peer for a lone ``*`` only, and in a list takes it for a host name.
    """
    if "*" in entries and len(entries) > 1:
        return "'*' trusts every peer, and only alone: give '*' or the proxies' addresses"
    for entry in entries:
        if problem := _entry_problem(entry):
            return problem
    return None


def _entry_problem(entry: str) -> str | None:
    """Say why `entry` cannot name a trusted proxy; None if it can (an address, a network, ``*``).

    uvicorn reads each entry strictly and keeps one it cannot parse as a literal host name
    that no peer's address ever equals: a typo, or a network with host bits set
    (``10.0.0.5/8``), would silently trust no proxy. The latter is refused too, not
    widened: whether the operator meant the network or the one address is theirs to say.
    """
    if entry == "*":
        return None
    try:
        ipaddress.ip_network(entry)
    except ValueError:
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            return (
                f"{entry!r} is not an IP address, a network (10.0.0.0/8) or '*'; give the "
                "proxies' addresses, separated by commas"
            )
        return (
            f"{entry!r} has host bits set: give the network ({network}) or the proxy's "
            "address alone"
        )
    return None


def path_prefix(value: str) -> str:
    """Return the path prefix `value` names, as `served_under` matches it (``/moa``).

    The trailing slash is taken off (``/moa/`` matched ``/moa//...`` alone); ``/`` alone is
    no prefix (the root), as nothing is. Raises ValueError for anything but a URL path; a
    ``%`` too, since the prefix is compared with the decoded path, which an escape never
    equals.
    """
    prefix = value.rstrip("/")
    if value not in ("", "/") and not re.fullmatch(r"(/[A-Za-z0-9._~!$&'()*+,;=:@-]+)+", prefix):
        raise ValueError(
            f"{value!r} is not a URL path such as /moa: give the path prefix the proxy "
            "keeps, starting with '/', unescaped (no '%')."
        )
    return prefix


def route_path(scope: Mapping[str, Any]) -> str:
    """Return the path of `scope` as the app's routes match it: without its ``root_path``.

    An app mounted in another (``parent.mount("/moa", create_app(...))``) is handed the
    whole path (``/moa/ui``) with the mount's prefix in ``root_path``, and Starlette routes
    what follows it. The guards that read the path read it so too: they read ``/moa/ui`` as
    no page and ``/moa/v1/...`` as no API, so the page of a keyed app was refused, a body not
    sent as JSON started a run and the run cap counted none.
    """
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", ""))
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path
