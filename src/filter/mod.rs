//! proxy-wasm filter modules built from C source with Debian's clang and lld (wasm32).

pub mod build;
pub mod standin;
