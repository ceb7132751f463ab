"""Commands that read the library: search, labels, eval, duplicates."""
