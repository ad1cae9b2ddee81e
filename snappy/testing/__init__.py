"""Generated documents and small hand-made indexes (tests, benchmarks, samples)."""
