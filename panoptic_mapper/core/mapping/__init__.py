"""Map façades: what a node or the evaluator drives (instant TSDF map, refined field, baselines)."""
