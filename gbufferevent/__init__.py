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
    SSLCertVerificationError, SSLEOFError, SSLError,
)
from .filter import (
    FilterBufferevent, FilterError, FilterStage, ProcessFilter, filter_new,
)
from .pair import PairBufferevent, pair_new
from .ratelimit import RateLimitGroup, TokenBucketConfig, TokenScheduler
from .socket import SocketBufferevent, create_connection
from .ssl import (
    SSLFilterBufferevent, SSLSocketBufferevent, client_context, load_or_generate_cert,
    openssl_filter_new, openssl_socket_new, server_context,
)

__version__ = "0.1.0"

__all__ = list(_constants_all) + [
    "Buffer", "Bufferevent", "DEFAULT_SEND_BUFFER", "SocketBufferevent",
    "create_connection", "PairBufferevent", "pair_new", "FilterBufferevent",
    "filter_new", "FilterStage", "ProcessFilter", "FilterError",
    "BuffereventClosedError", "CallbackError", "IncompleteReadError",
    "LimitOverrunError", "RateLimitGroup", "TokenBucketConfig", "TokenScheduler",
    "__version__",
    "SSLError", "SSLEOFError", "SSLCertVerificationError", "SSLSocketBufferevent",
    "SSLFilterBufferevent", "openssl_socket_new", "openssl_filter_new",
    "server_context", "client_context", "load_or_generate_cert",
]
