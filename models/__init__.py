"""The math of LineGuard: backbones, heads, scoring, thresholds and metrics. Plain torch/numpy; no Ray, no HTTP."""
