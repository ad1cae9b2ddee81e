"""Region-grounding evaluation (`snappy eval`): datasets, the paper's and precision-aware metrics,
baselines, full-chain runs and reports. See docs/eval.md."""
