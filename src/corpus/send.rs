//! Sending an FTW request byte for byte over TCP, as FTW builds it, and reading the answer's status.
//!
//! The corpus sends its own Host header and sometimes malformed requests, which an HTTP client
//! would refuse or rewrite: the request line and headers go out as written. The harness adds one
//! header, its correlation id (`x-waf-e2e-id`), after the test's own. FTW's own "magic" for a body
//! is applied as FTW applies it (unless `stop_magic`): a missing `Content-Type` becomes
//! `application/x-www-form-urlencoded`, such a body without percent-escapes is form-encoded
//! (pairs without a value dropped), and a missing `Content-Length` is added.

use super::ftw::{decode_base64, Input};
use crate::contract::CORRELATION_HEADER;
use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The bytes FTW sends for `input`, with the correlation header added.
pub fn request_bytes(input: &Input, correlation_id: &str) -> Vec<u8> {
    let id_line = format!("{CORRELATION_HEADER}: {correlation_id}\r\n");
    let raw = match (&input.raw_request, &input.encoded_request) {
        (Some(text), _) => Some(text.as_bytes().to_vec()),
        (None, Some(encoded)) => Some(decode_base64(encoded).unwrap_or_default()),
        (None, None) => None,
    };
    if let Some(raw) = raw {
        // After the request line: the line ends at the first LF (some corpus requests use bare LF).
        return match raw.iter().position(|b| *b == b'\n') {
            Some(i) => {
                let eol: &[u8] = if i > 0 && raw[i - 1] == b'\r' { b"\r\n" } else { b"\n" };
                let mut out = raw[..=i].to_vec();
                out.extend_from_slice(id_line.trim_end().as_bytes());
                out.extend_from_slice(eol);
                out.extend_from_slice(&raw[i + 1..]);
                out
            }
            None => raw,
        };
    }
    let method = input.method.as_deref().unwrap_or("GET");
    let uri = input.uri.as_deref().unwrap_or("/");
    let version = input.version.as_deref().unwrap_or("HTTP/1.1");
    let mut body = input.data.as_ref().map(|d| d.text()).unwrap_or_default();
    let mut headers = input.headers.0.clone();
    if !body.is_empty() && input.stop_magic != Some(true) {
        // FTW compares header names exactly (its headers are a dict).
        if !headers.iter().any(|(n, _)| n == "Content-Type") {
            headers.push(("Content-Type".into(), FORM.into()));
        }
        if headers.iter().any(|(n, v)| n == "Content-Type" && v == FORM) {
            body = form_encoded(&body);
        }
        if !headers.iter().any(|(n, _)| n == "Content-Length") {
            headers.push(("Content-Length".into(), body.len().to_string()));
        }
    }
    let mut out = format!("{method} {uri} {version}\r\n");
    for (name, value) in &headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&id_line);
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

const FORM: &str = "application/x-www-form-urlencoded";

/// FTW's encoding of a form body: one that holds no percent-escape is split into `name=value`
/// pairs (on `&` and `;`; a pair without `=` or value is dropped, `+` is a space) and written
/// back with every byte outside `A-Za-z0-9_.-~` escaped (space as `+`). A body that already holds
/// escapes, or yields no pair, is sent as written.
pub fn form_encoded(body: &str) -> String {
    if percent_decoded(body) != body.as_bytes() {
        return body.to_string();
    }
    let pairs: Vec<(String, String)> = body
        .split(['&', ';'])
        .filter_map(|p| p.split_once('='))
        .filter(|(_, v)| !v.is_empty())
        .map(|(n, v)| (n.replace('+', " "), v.replace('+', " ")))
        .collect();
    if pairs.is_empty() {
        return body.to_string();
    }
    pairs.iter().map(|(n, v)| format!("{}={}", quote_plus(n), quote_plus(v))).collect::<Vec<_>>().join("&")
}

/// `%XX` (hex) decoded; any other `%` stays.
fn percent_decoded(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn quote_plus(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A final response with this status (after any `100 Continue`).
    Status(u16),
    /// No HTTP response: the connection failed, closed or timed out first (what `expect_error` wants).
    NoResponse(String),
}

/// What came back on one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// The answer to the test's request.
    pub answer: Answer,
    /// Statuses of the further requests Envoy found in the same bytes (a body longer than its
    /// Content-Length: the corpus' request smuggling tests) and answered on the connection.
    pub pipelined: Vec<u16>,
}

/// How many further requests follow the first one in `bytes`: 1 when the body is longer than the
/// `Content-Length` the head declares (and no Transfer-Encoding), else 0.
pub fn pipelined_requests(bytes: &[u8]) -> usize {
    let Some(i) = find(bytes, b"\r\n\r\n") else { return 0 };
    let head = String::from_utf8_lossy(&bytes[..i + 4]);
    if let Framing::Length(n) = framing_of(&head) {
        let body = bytes.len() - (i + 4);
        return usize::from(body > n);
    }
    0
}

/// Sends `bytes` to `gateway` on a new connection and reads every response (so the proxy
/// finishes each transaction, and its filter logs it), within `timeout`.
pub async fn send(gateway: SocketAddr, bytes: &[u8], head_request: bool, timeout: Duration) -> Exchange {
    let responses = 1 + pipelined_requests(bytes);
    match tokio::time::timeout(timeout, exchange(gateway, bytes, head_request, responses)).await {
        Ok(Ok(statuses)) => Exchange { answer: Answer::Status(statuses[0]), pipelined: statuses[1..].to_vec() },
        Ok(Err(e)) => Exchange { answer: Answer::NoResponse(format!("{e:#}")), pipelined: Vec::new() },
        Err(_) => Exchange { answer: Answer::NoResponse(format!("no complete response within {}s", timeout.as_secs_f64())), pipelined: Vec::new() },
    }
}

/// The final statuses of up to `responses` responses; the first is required, later ones are read
/// while the connection serves them.
async fn exchange(gateway: SocketAddr, bytes: &[u8], head_request: bool, responses: usize) -> Result<Vec<u16>> {
    let mut stream = TcpStream::connect(gateway).await.with_context(|| format!("connect to the gateway {gateway}"))?;
    stream.write_all(bytes).await.context("write the request")?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let mut from = 0;
    let mut statuses = Vec::new();
    while statuses.len() < responses {
        let first = statuses.is_empty();
        // One response head at `from`; 1xx heads are followed by the final one.
        let head_end = loop {
            if let Some(i) = find(&buf[from..], b"\r\n\r\n") {
                break Some(from + i + 4);
            }
            let n = match stream.read(&mut chunk).await {
                Ok(n) => n,
                Err(e) if first => return Err(e).context("read the response"),
                Err(_) => 0,
            };
            if n == 0 {
                if first {
                    bail!("the connection closed {} the response head", if buf.len() > from { "inside" } else { "before" });
                }
                break None;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let Some(head_end) = head_end else { break };
        let head = String::from_utf8_lossy(&buf[from..head_end]).into_owned();
        let status = parse_status(&head)?;
        if (100..200).contains(&status) {
            from = head_end;
            continue;
        }
        let framing = if (head_request && first) || status == 204 || status == 304 { Framing::Length(0) } else { framing_of(&head) };
        from = read_body(&mut stream, &mut buf, head_end, framing).await?;
        statuses.push(status);
    }
    Ok(statuses)
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

fn framing_of(head: &str) -> Framing {
    let header = |name: &str| head.lines().find_map(|l| l.split_once(':').filter(|(n, _)| n.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_string()));
    if header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return Framing::Chunked;
    }
    match header("content-length").and_then(|v| v.parse().ok()) {
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    }
}

/// Reads the body starting at `start` in `buf`; returns where it ends.
async fn read_body(stream: &mut TcpStream, buf: &mut Vec<u8>, start: usize, framing: Framing) -> Result<usize> {
    let mut chunk = [0u8; 16384];
    loop {
        let body = &buf[start..];
        let end = match framing {
            Framing::Length(n) => (body.len() >= n).then_some(start + n),
            Framing::Chunked => find(body, b"0\r\n\r\n").map(|i| start + i + 5),
            Framing::UntilClose => None,
        };
        if let Some(end) = end {
            return Ok(end);
        }
        let n = stream.read(&mut chunk).await.context("read the response body")?;
        if n == 0 {
            return match framing {
                Framing::UntilClose => Ok(buf.len()),
                _ => bail!("the connection closed inside the response body"),
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The status code of a response head (`HTTP/1.1 403 Forbidden`).
fn parse_status(head: &str) -> Result<u16> {
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    let code = parts.next().and_then(|c| c.parse::<u16>().ok());
    match code {
        Some(c) if version.starts_with("HTTP/") => Ok(c),
        _ => bail!("not an HTTP response: {line:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::ftw::{Data, Headers};

    #[test]
    fn a_request_is_built_as_ftw_does_with_the_correlation_header_last() {
        let input = Input {
            method: Some("POST".into()),
            uri: Some("/?a=1".into()),
            version: Some("HTTP/1.0".into()),
            headers: Headers(vec![("Host".into(), "localhost".into()), ("User-Agent".into(), "ModSecurity CRS 3 Tests".into())]),
            data: Some(Data::Text("x=y".into())),
            ..Input::default()
        };
        let text = String::from_utf8(request_bytes(&input, "id-1")).unwrap();
        assert_eq!(text, "POST /?a=1 HTTP/1.0\r\nHost: localhost\r\nUser-Agent: ModSecurity CRS 3 Tests\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\nx-waf-e2e-id: id-1\r\n\r\nx=y");
        let magic = Input { stop_magic: Some(true), ..input };
        let text = String::from_utf8(request_bytes(&magic, "id-1")).unwrap();
        assert!(!text.contains("Content-Length") && !text.contains("Content-Type"), "stop_magic sends the headers as written: {text}");
    }

    #[test]
    fn a_form_body_is_encoded_as_ftw_does_unless_it_already_holds_escapes() {
        assert_eq!(form_encoded("a=1 OR 1=1&b=x'y;c"), "a=1+OR+1%3D1&b=x%27y");
        assert_eq!(form_encoded("pay=UnIoN+SeLeCt%0A"), "pay=UnIoN+SeLeCt%0A", "escapes present: as written");
        assert_eq!(form_encoded("no pairs here"), "no pairs here");
        assert_eq!(form_encoded("100%"), "100%", "no pair");
        assert_eq!(form_encoded("x=100%"), "x=100%25", "a lone % is no escape");
    }

    #[test]
    fn a_raw_request_gets_the_correlation_header_after_its_request_line_with_its_own_line_ending() {
        let input = Input { raw_request: Some("GET / HTTP/1.1\nHost: a\n\n".into()), ..Input::default() };
        assert_eq!(String::from_utf8(request_bytes(&input, "r")).unwrap(), "GET / HTTP/1.1\nx-waf-e2e-id: r\nHost: a\n\n");
        let encoded = Input { encoded_request: Some("R0VUIC8gSFRUUC8xLjENCkhvc3Q6IGENCg0K".into()), ..Input::default() };
        assert_eq!(String::from_utf8(request_bytes(&encoded, "e")).unwrap(), "GET / HTTP/1.1\r\nx-waf-e2e-id: e\r\nHost: a\r\n\r\n");
    }

    #[test]
    fn a_body_longer_than_its_content_length_carries_a_second_request() {
        assert_eq!(pipelined_requests(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nbarGET /b HTTP/1.1\r\n\r\n"), 1);
        assert_eq!(pipelined_requests(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nbar"), 0);
        assert_eq!(pipelined_requests(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n0\r\n\r\n"), 0);
    }

    #[test]
    fn a_status_line_is_read_and_anything_else_is_refused() {
        assert_eq!(parse_status("HTTP/1.1 403 Forbidden\r\n").unwrap(), 403);
        assert!(parse_status("SSH-2.0-x\r\n").is_err());
    }

    #[tokio::test]
    async fn a_server_that_closes_without_answering_is_no_response_and_a_continue_is_skipped() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            for reply in [&b""[..], &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"[..]] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut b = [0u8; 256];
                let _ = s.read(&mut b).await.unwrap();
                s.write_all(reply).await.unwrap();
            }
        });
        let first = send(addr, b"GET / HTTP/1.1\r\n\r\n", false, Duration::from_secs(5)).await.answer;
        assert!(matches!(&first, Answer::NoResponse(why) if why.contains("before the response head")), "{first:?}");
        assert_eq!(send(addr, b"GET / HTTP/1.1\r\n\r\n", false, Duration::from_secs(5)).await.answer, Answer::Status(200));
        server.await.unwrap();
    }
}
