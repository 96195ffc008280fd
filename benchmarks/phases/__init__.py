"""The benchmark's phases (publish, bulk, drain, latency, depth, memory), one module each."""
