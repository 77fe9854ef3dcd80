//! The callout protocol between the stand-in filter (`filter/standin.c`, inside Envoy) and the reference
//! WAF service. Both sides follow it exactly.
//!
//! # Request (filter -> service)
//! `proxy_http_call` to the Envoy cluster [`CALLOUT_CLUSTER`](super::CALLOUT_CLUSTER), timeout 5000 ms, headers
//! `:method: POST`, `:path: /v1/<stage>`, `:authority: waf-e2e-reference-waf`,
//! `content-type: application/octet-stream`, and per stage:
//! - `request_headers`: `x-waf-e2e-config-length: <N>`; body = the plugin configuration (N bytes, the
//!   JSON the filter got in `proxy_on_configure`) followed by the request header map serialized as
//!   `proxy_get_header_map_pairs` returns it (see [`encode_header_map`]). Also `x-waf-e2e-source` and
//!   `x-waf-e2e-destination` (`ip:port`, from the properties `source.address` / `destination.address`;
//!   omitted when unavailable).
//! - every later stage: `x-waf-e2e-tx: <id>` (from the first answer).
//! - `request_body`: body = the complete request body (the filter buffers until end of stream).
//! - `response_headers`: body = the serialized response header map (with `:status`);
//!   `x-waf-e2e-end-of-stream: 1` when the response has no body (this stage then finishes the transaction).
//! - `response_body`: body = the complete response body; finishes the transaction.
//!
//! # Answer (service -> filter)
//! HTTP 200 (anything else is a service failure: the filter logs an error and answers 500), headers
//! `x-waf-e2e-tx: <id>` (first answer), `x-waf-e2e-action: continue|block`, `x-waf-e2e-status: <code>`
//! (with block), `x-waf-e2e-metrics: <stat> [<stat>...]` (space separated; the filter defines each as a
//! counter and increments it by 1; a name twice means 2; absent = none). Body: empty, or the Coraza audit
//! JSON that the filter logs as `AuditLog:<json>` at info level.
//!
//! A block finishes the transaction at once (the service feeds the block status and runs logging before
//! answering, so the record shows it). A would_block decision's metric comes with the stage that decided
//! it, its record with the stage that finishes the transaction.

use anyhow::{bail, Result};

/// `:authority` of every callout.
pub const AUTHORITY: &str = "waf-e2e-reference-waf";
/// Callout timeout the filter sets, in milliseconds.
pub const TIMEOUT_MS: u32 = 5000;
/// Length of the plugin configuration at the start of the `request_headers` body.
pub const CONFIG_LENGTH: &str = "x-waf-e2e-config-length";
/// Downstream peer `ip:port`.
pub const SOURCE: &str = "x-waf-e2e-source";
/// Listener address `ip:port`.
pub const DESTINATION: &str = "x-waf-e2e-destination";
/// The transaction id (answer to `request_headers`; request header of every later stage).
pub const TX: &str = "x-waf-e2e-tx";
/// `1` on `response_headers` when the response has no body.
pub const END_OF_STREAM: &str = "x-waf-e2e-end-of-stream";
/// `continue` or `block`.
pub const ACTION: &str = "x-waf-e2e-action";
/// The status to answer with on `block`.
pub const STATUS: &str = "x-waf-e2e-status";
/// Space-separated stat names to increment by one each.
pub const METRICS: &str = "x-waf-e2e-metrics";

/// A callout stage: the Envoy callback that sends it, and the `phase` label of a decision made in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Request headers (ModSecurity phase 1).
    RequestHeaders,
    /// Request body at end of stream (phase 2).
    RequestBody,
    /// Response headers (phase 2 if it has not run, then phase 3).
    ResponseHeaders,
    /// Response body at end of stream (phase 4).
    ResponseBody,
}

impl Stage {
    /// Every stage, in stream order.
    pub const ALL: [Stage; 4] = [Stage::RequestHeaders, Stage::RequestBody, Stage::ResponseHeaders, Stage::ResponseBody];

    /// The `<stage>` of `/v1/<stage>`.
    pub fn path_name(self) -> &'static str {
        match self {
            Stage::RequestHeaders => "request_headers",
            Stage::RequestBody => "request_body",
            Stage::ResponseHeaders => "response_headers",
            Stage::ResponseBody => "response_body",
        }
    }

    /// The stage named by `/v1/<stage>`.
    pub fn from_path_name(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.path_name() == name)
    }

    /// The `<phase>` part of `waf_filter.tx.*_phase=<phase>` (coraza-proxy-wasm names the callback).
    pub fn as_stat(self) -> &'static str {
        match self {
            Stage::RequestHeaders => "http_request_headers",
            Stage::RequestBody => "http_request_body",
            Stage::ResponseHeaders => "http_response_headers",
            Stage::ResponseBody => "http_response_body",
        }
    }
}

/// Serializes header pairs as proxy-wasm does: u32 LE count, u32 LE key and value sizes per pair, then
/// each key and value followed by a NUL.
pub fn encode_header_map(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// Reads a serialized header map (empty input or a single NUL byte is an empty map); values are lossily UTF-8.
pub fn decode_header_map(bytes: &[u8]) -> Result<Vec<(String, String)>> {
    if bytes.is_empty() || bytes == [0] {
        return Ok(Vec::new());
    }
    let word = |at: usize| -> Result<usize> {
        match bytes.get(at..at + 4) {
            Some(b) => Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize),
            None => bail!("serialized header map ends inside its size table (at byte {at} of {})", bytes.len()),
        }
    };
    let count = word(0)?;
    let table_end = count.checked_mul(8).and_then(|n| n.checked_add(4)).filter(|end| *end <= bytes.len());
    let Some(mut at) = table_end else {
        bail!("serialized header map claims {count} pairs but has only {} bytes", bytes.len());
    };
    let mut pairs = Vec::with_capacity(count);
    for i in 0..count {
        let (key_len, value_len) = (word(4 + 8 * i)?, word(8 + 8 * i)?);
        let mut take = |len: usize| -> Result<String> {
            let Some(text) = bytes.get(at..at + len) else { bail!("serialized header map pair {i} runs past the end") };
            if bytes.get(at + len) != Some(&0) {
                bail!("serialized header map pair {i} is not NUL-terminated");
            }
            at += len + 1;
            Ok(String::from_utf8_lossy(text).into_owned())
        };
        let key = take(key_len)?;
        let value = take(value_len)?;
        pairs.push((key, value));
    }
    if at != bytes.len() {
        bail!("serialized header map has {} bytes after its {count} pairs", bytes.len() - at);
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specs_example_map_round_trips() {
        let bytes = encode_header_map(&[("a", "1"), ("b", "22")]);
        let want: Vec<u8> = vec![2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, b'a', 0, b'1', 0, b'b', 0, b'2', b'2', 0];
        assert_eq!(bytes, want);
        assert_eq!(decode_header_map(&bytes).unwrap(), vec![("a".to_string(), "1".to_string()), ("b".to_string(), "22".to_string())]);
    }

    #[test]
    fn empty_maps_in_both_spellings_decode_to_nothing() {
        assert!(decode_header_map(b"").unwrap().is_empty());
        assert!(decode_header_map(&[0]).unwrap().is_empty());
    }

    #[test]
    fn truncated_or_padded_maps_are_errors() {
        let good = encode_header_map(&[("host", "x")]);
        for bad in [&good[..good.len() - 1], &good[..6], &[9, 0, 0, 0][..]] {
            assert!(decode_header_map(bad).is_err(), "{bad:?}");
        }
        let mut padded = good.clone();
        padded.push(b'x');
        assert!(decode_header_map(&padded).is_err());
        let mut unterminated = good;
        let last = unterminated.len() - 1;
        unterminated[last] = b'y';
        assert!(decode_header_map(&unterminated).is_err());
    }

    #[test]
    fn stage_names_round_trip() {
        for stage in Stage::ALL {
            assert_eq!(Stage::from_path_name(stage.path_name()), Some(stage));
        }
        assert_eq!(Stage::from_path_name("logging"), None);
    }
}
