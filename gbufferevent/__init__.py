"""gbufferevent: libevent's bufferevents on gevent's hub.

Buffered connections that you drive with callbacks (libevent style) or with
plain blocking-looking greenlet code (socket style), which stack (filters, TLS,
in-memory pairs) and keep to bandwidth budgets.  See README.md and docs/.
"""
from .constants import *  # noqa: F401,F403
from .constants import __all__ as _constants_all
from .buffer import Buffer
from .bufferevent import DEFAULT_SEND_BUFFER, Bufferevent
from .errors import (
    BuffereventClosedError, CallbackError, IncompleteReadError, LimitOverrunError,
)
from .filter import (
    FilterBufferevent, FilterError, FilterStage, ProcessFilter, filter_new,
)
from .pair import PairBufferevent, pair_new
from .ratelimit import RateLimitGroup, TokenBucketConfig, TokenScheduler
from .socket import SocketBufferevent, create_connection

__version__ = "0.1.0"

__all__ = list(_constants_all) + [
    "Buffer", "Bufferevent", "DEFAULT_SEND_BUFFER", "SocketBufferevent",
    "create_connection", "PairBufferevent", "pair_new", "FilterBufferevent",
    "filter_new", "FilterStage", "ProcessFilter", "FilterError",
    "BuffereventClosedError", "CallbackError", "IncompleteReadError",
    "LimitOverrunError", "RateLimitGroup", "TokenBucketConfig", "TokenScheduler",
    "__version__",
]
