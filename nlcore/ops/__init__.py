"""Fast-weight memories updated inside the forward pass (Titans, HOPE), each with a token-by-token
reference (the definition) and a chunk-parallel path that equals it."""
