"""What the recorder and the server share: topics, messages, manifests and transfer machines (sans-IO).

Nothing in this package opens a socket, a file or a thread; both sides drive the same code.
"""

from protocol.errors import ProtocolError
from protocol.topics import VERSION

__all__ = ["PROTOCOL_VERSION", "ProtocolError"]

PROTOCOL_VERSION = VERSION
