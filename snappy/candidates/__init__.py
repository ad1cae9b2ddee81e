"""The search's candidate stage: what the nightly run keeps (codebook, codes), and its settings."""
