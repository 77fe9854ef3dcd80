//! The reference proxy: a STAND-IN for an Envoy Gateway proxy running the Coraza WAF filter (local stack only).
