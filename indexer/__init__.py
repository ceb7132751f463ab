"""The indexer owns the library: scan, decode, backbone, SQLite schema, FAISS file, the batch job."""
