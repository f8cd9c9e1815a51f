"""How the package talks to the network: the HTTP clients it builds, its call loop, loopback ports.

Bottom floor: imports nothing of the package but `errors`.
"""
