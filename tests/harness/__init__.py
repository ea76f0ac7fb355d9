"""Process harness of the integration tests: private NATS servers and service processes.

Tests import it as ``harness`` (pytest puts ``tests/`` on the path: ``tests/conftest.py``
has no package above it), so every suite launches brokers and services the same way.
"""
