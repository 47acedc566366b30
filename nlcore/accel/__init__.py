"""Acceleration of a training step: bf16 precision, torch.compile, the CUDA-graph step, data parallelism.

Nothing here changes what a step computes; each part is tested against the plain eager step.
"""
