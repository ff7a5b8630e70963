"""Transport tests: one contract suite subclassed per transport, plus transport specifics."""
