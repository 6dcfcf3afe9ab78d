"""Benchmarks: `hvd bench` (methods and peers on prompt suites, timed or replayed) and `hvd
agent-bench` (agent loops through servers). Their prompts come from hvd.data."""
