"""snapstate's benchmark suites (ASV) and the shared deterministic data generator."""
