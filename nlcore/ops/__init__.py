"""Memories written inside the forward pass (Titans, HOPE), each a folder with its definition
(`naive.py`, token by token) beside the paths that equal it (`chunk.py` chunk-parallel, `loop.py` a
fused op, `kernels.py` its Triton kernels), and the pieces they share:

    gates.py        chunk coefficients of the gated momentum recurrence, step factors
    l2norm.py       L2 normalisation with its hand-written backward; EPS
    triangular.py   unit lower-triangular solves with their autograd (+ triangular_kernels.py)
    linear_memory/  Titans' linear memory: the gated delta rule with momentum
    mlp_memory/     Titans' 2-layer MLP memory
    hope_memory/    HOPE's self-modifying memory (three linear memories, self-generated targets)

Module-level switches, read at every call (tests and probes set them; nothing else does):
`triangular.PREFERRED`, `mlp_memory.chunk.LOOP`, `hope_memory.chunk.FUSED` and `.ELEMENTWISE`, and
the Triton tile settings at the top of `mlp_memory/loop.py` and `hope_memory/loop.py`.
"""
