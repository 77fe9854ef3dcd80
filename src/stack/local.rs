//! The local stack: real Prometheus and the reference proxy on loopback.
