"""Per-level optimizers of the CMS: the delta rule as an optimizer, Adam(W) as foreach ops, sliced Adam(W)."""
