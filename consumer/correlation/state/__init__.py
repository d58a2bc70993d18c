"""The correlator's state layer: the one place that knows how state is held and written.

:class:`StateStore` owns one partition's open operations and finished-operation markers, its
reorder buffer (:mod:`~consumer.correlation.state.buffer`) and its event time
(:mod:`~consumer.correlation.state.clock`): their hot and cold forms, the changelog writes
(drain), rollback to the last commit point, the byte estimate and the restore. The changelog's
keys and values are :mod:`~consumer.correlation.state.codec`; the timers that order deadlines,
expiries and releases are :mod:`~consumer.correlation.state.timers`. Nothing outside this
package reads a changelog key or value.
"""

from consumer.correlation.state.buffer import WAITING
from consumer.correlation.state.clock import NO_TIME
from consumer.correlation.state.codec import Sources
from consumer.correlation.state.store import HOT_OP_BYTES, StateStore

__all__ = ["HOT_OP_BYTES", "NO_TIME", "WAITING", "Sources", "StateStore"]
