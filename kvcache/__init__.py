"""kvcache: the index of which token-prefix blocks are cached on which engine."""

from kvcache.hashing import DEFAULT_BLOCK_SIZE, block_hashes
from kvcache.memory import MemoryIndex
from kvcache.protocol import PrefixIndex

__all__ = ["DEFAULT_BLOCK_SIZE", "MemoryIndex", "PrefixIndex", "block_hashes"]
