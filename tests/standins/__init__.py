"""Stand-ins for servers that cannot run on these machines (see DESIGN.md §5).

A stand-in implements the real server's own wire API closely enough to test an adapter against
it, and is named as such so that nobody mistakes it for the real thing.
"""
