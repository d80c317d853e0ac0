"""chatledger's benchmarks: `python -m bench` (or `make bench`). Never run as tests."""
