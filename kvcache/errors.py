"""The kvcache exception tree. Third-party errors (redis, zmq, msgspec) are translated at one boundary each.

::

    KVCacheError
    ├── IndexUnavailable      the shared (Redis) index cannot be reached; callers of the index never see it,
    │                         the Redis backend catches it and answers from its local mirror
    ├── EventDecodeError      a KV-event payload is not a vLLM EventBatch (either msgpack layout)
    └── ReplayFailed          an engine's replay socket did not deliver (the subscriber then resyncs)
"""

from __future__ import annotations


class KVCacheError(Exception):
    """Base of every error raised by the kvcache package."""


class IndexUnavailable(KVCacheError):
    """The shared index backend is unreachable or answered with an error."""


class EventDecodeError(KVCacheError, ValueError):
    """A KV-event batch could not be decoded."""


class ReplayFailed(KVCacheError):
    """A KV-event replay request failed (no answer, malformed reply)."""
