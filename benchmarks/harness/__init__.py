"""What the benchmark scripts share; a script imports from here, never from another script.

- ``results``: where benchmarks read and write (one JSON per benchmark, the long runs, the real data);
- ``timing``: side-by-side timing in one process (the shared flags, alternating rounds) and peak memory;
- ``steps``: one training step of each contestant, the kit's methods and PEFT's, on one fixed batch;
- ``quality``: resumable quality runs (restore the committed record, sweep what is missing, record, intervals);
- ``grid``: the learning-rate grid's labels, and the rates its committed record recommends.
"""
