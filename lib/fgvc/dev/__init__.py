"""Developer tools: the benchmark, the GPU check, the mutation report, run diagnostics and the
fast-path runs. They measure the code (speed, memory, test strength, a run's internals), not
the methods; they may import the study and the library, and nothing imports them.
"""
