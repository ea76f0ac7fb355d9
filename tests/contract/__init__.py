"""Contract suites: one behaviour, checked on every adapter of a port."""
