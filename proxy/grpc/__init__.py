"""gRPC on meshwire's own HTTP/2 stack: framing, status, a service terminal and a unary client."""
