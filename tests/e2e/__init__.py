"""End-to-end tests: the example services in their own processes on a real broker."""
