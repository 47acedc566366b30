"""HOPE's self-modifying memory over full chunks: `chunk.py` (`hope_chunks`: the gates' factors for
all chunks at once, the loop over chunks, the reads after it), `loop.py` (that loop as one op with
a hand-written backward) and `kernels.py` (the op's Triton kernels). Its token reference is
`nlcore.ops.linear_memory`'s token path run chunk by chunk, with each chunk's keys and targets made
from the memories' chunk-start states (`SelfModifyingMemory` in nlcore.models.memory_layers)."""

from nlcore.ops.hope_memory.chunk import hope_chunks

__all__ = ["hope_chunks"]
