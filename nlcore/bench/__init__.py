"""Benchmarks: step time of named configurations, the recurrence floor, memory-path speed, the 1-vs-N GPU check."""
