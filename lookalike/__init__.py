"""lookalike's command line: composes indexer, search and web, nothing else."""
