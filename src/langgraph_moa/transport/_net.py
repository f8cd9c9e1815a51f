"""Loopback networking helpers shared by the local runtime and the test servers."""

import socket


def free_port() -> int:
    """Return a loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_loopback_url(url: str) -> bool:
    """Tell whether `url` points at this machine (``localhost`` or a loopback address).

    Such a request must never go through a proxy: a proxy from ``HTTP_PROXY`` would be
    asked for ``127.0.0.1`` and reach its own loopback, or nothing.
    """
    import ipaddress
    from urllib.parse import urlsplit

    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
