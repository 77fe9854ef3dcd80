//! Positions in audit logs: a cursor taken before the traffic, and reads of the complete lines
//! written after it, counted in bytes.
//!
//! Every stack reads its audit log through these (a local file, an endpoints file, a pod's log
//! volume), so they sit below the stacks and below `k8s`.

use std::collections::BTreeMap;

/// A position in the audit log sources, taken before traffic so only newer records are read.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditCursor(pub BTreeMap<String, u64>);

/// Audit log lines read after a cursor, per source (file or pod).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct AuditLines {
    /// Every complete line written after the cursor, in order, tagged with its source.
    pub lines: Vec<(String, String)>,
}

/// Where a read continues after a cursor at byte `cursor` of a file now `size` bytes long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPlan {
    /// Byte offset to read from.
    pub from: u64,
    /// The file shrank below the cursor (rotated or truncated): read from 0.
    pub rotated: bool,
}

/// Plans a read: from the cursor, or from 0 when the file shrank below it.
pub fn plan_read(cursor: u64, size: u64) -> ReadPlan {
    if size < cursor {
        ReadPlan { from: 0, rotated: true }
    } else {
        ReadPlan { from: cursor, rotated: false }
    }
}

/// The complete lines of `bytes` (which start at byte `from`), and the offset after the last one;
/// a partial last line is held back for the next read. Lines are split on `\n` bytes, so
/// multi-byte UTF-8 characters are never cut; invalid UTF-8 is replaced, `\r\n` is trimmed.
pub fn split_complete_lines(from: u64, bytes: &[u8]) -> (Vec<String>, u64) {
    let Some(last_nl) = bytes.iter().rposition(|&b| b == b'\n') else { return (Vec::new(), from) };
    let lines = bytes[..last_nl]
        .split(|&b| b == b'\n')
        .map(|l| String::from_utf8_lossy(l.strip_suffix(b"\r").unwrap_or(l)).into_owned())
        .collect();
    (lines, from + last_nl as u64 + 1)
}

/// The complete lines of `source` (the whole file, `bytes`) after `cursor`'s offset for it, each
/// tagged with `source`; a file that shrank below the cursor (rotated, truncated) is read from 0.
pub fn lines_after(cursor: &AuditCursor, source: &str, bytes: &[u8]) -> AuditLines {
    let offset = cursor.0.get(source).copied().unwrap_or(0);
    let read = plan_read(offset, bytes.len() as u64);
    if read.rotated {
        tracing::warn!("{source} shrank below the audit cursor ({offset} bytes); reading it from the start");
    }
    let from = usize::try_from(read.from).unwrap_or(usize::MAX).min(bytes.len());
    let (lines, _) = split_complete_lines(read.from, &bytes[from..]);
    AuditLines { lines: lines.into_iter().map(|l| (source.to_string(), l)).collect() }
}

/// The cursor for a tail read starting at byte `from`: just after its last complete line.
pub fn align_cursor(from: u64, bytes: &[u8]) -> u64 {
    split_complete_lines(from, bytes).1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_lines_are_returned_and_a_partial_last_line_is_held_back() {
        let (lines, next) = split_complete_lines(100, b"one\ntwo\nthr");
        assert_eq!(lines, ["one", "two"]);
        assert_eq!(next, 108);
        // the next read starts at the held-back line and completes it
        let (lines, next) = split_complete_lines(next, b"three\n");
        assert_eq!(lines, ["three"]);
        assert_eq!(next, 114);
    }

    #[test]
    fn an_empty_read_or_one_without_a_newline_keeps_the_offset() {
        assert_eq!(split_complete_lines(42, b""), (Vec::<String>::new(), 42));
        assert_eq!(split_complete_lines(42, b"no newline yet"), (Vec::<String>::new(), 42));
    }

    #[test]
    fn offsets_count_bytes_so_multi_byte_characters_are_never_cut() {
        let text = "AuditLog:{\"uri\":\"/caf\u{e9}?q=\u{2713}\"}\n";
        let bytes = text.as_bytes();
        // a read that ends inside the two-byte 'é' holds the whole line back
        let cut = bytes.iter().position(|&b| b == 0xC3).unwrap() + 1;
        assert_eq!(split_complete_lines(0, &bytes[..cut]), (Vec::<String>::new(), 0));
        let (lines, next) = split_complete_lines(0, bytes);
        assert_eq!(lines, [text.trim_end()]);
        assert_eq!(next, bytes.len() as u64);
        assert!(bytes.len() > text.chars().count(), "the offset is in bytes, not characters");
    }

    #[test]
    fn crlf_endings_and_empty_lines_are_kept_as_lines() {
        let (lines, next) = split_complete_lines(0, b"a\r\n\nb\n");
        assert_eq!(lines, ["a", "", "b"]);
        assert_eq!(next, 6);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let (lines, _) = split_complete_lines(0, b"ok \xff\xfe bytes\n");
        assert_eq!(lines, ["ok \u{fffd}\u{fffd} bytes"]);
    }

    #[test]
    fn a_file_that_shrank_below_the_cursor_is_read_from_the_start() {
        assert_eq!(plan_read(500, 800), ReadPlan { from: 500, rotated: false });
        assert_eq!(plan_read(500, 500), ReadPlan { from: 500, rotated: false });
        assert_eq!(plan_read(500, 120), ReadPlan { from: 0, rotated: true });
        assert_eq!(plan_read(0, 0), ReadPlan { from: 0, rotated: false });
    }

    #[test]
    fn lines_after_a_cursor_are_the_complete_new_ones_and_a_shrunk_file_is_read_whole() {
        let cursor = AuditCursor([("log".to_string(), 4)].into());
        let tagged = |lines: &[&str]| lines.iter().map(|l| ("log".to_string(), l.to_string())).collect::<Vec<_>>();
        assert_eq!(lines_after(&cursor, "log", b"old\nnew\npart").lines, tagged(&["new"]));
        assert_eq!(lines_after(&cursor, "log", b"ab\n").lines, tagged(&["ab"]), "rotated below the cursor");
        assert_eq!(lines_after(&cursor, "other", b"x\n").lines, vec![("other".to_string(), "x".to_string())], "no cursor: from 0");
    }

    #[test]
    fn a_cursor_lands_after_the_last_complete_line_of_the_tail() {
        // tail of a file starting at byte 1000; the last line is still being written
        assert_eq!(align_cursor(1000, b"ial line\nfull line\nbeing writ"), 1019);
        assert_eq!(align_cursor(1000, b"ends cleanly\n"), 1013);
        assert_eq!(align_cursor(0, b""), 0);
    }
}
