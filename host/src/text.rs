//! Plugin-supplied text on its way into dead-letter headers and the host's logs: capped in
//! bytes at a char boundary (a byte cut inside a multi-byte character would panic or make
//! invalid UTF-8), with the cut marked, and escaped so that it cannot forge log lines.

use std::borrow::Cow;
use std::fmt::Write as _;

/// The most bytes a reason (`reject`, `retry`, a failure description) keeps: it becomes a
/// dead-letter header and a log field, so it must stay far below the broker's record limit.
pub const MAX_REASON_BYTES: usize = 4096;

/// The most bytes a plugin's log message keeps (after escaping).
pub const MAX_LOG_MESSAGE_BYTES: usize = 8192;

/// The most bytes a plugin's log context keeps (after escaping).
pub const MAX_LOG_CONTEXT_BYTES: usize = 256;

/// The marker that ends a cut text, naming the size of the whole.
fn marker(original: usize) -> String {
    format!("… [truncated, {original} bytes]")
}

/// `s` itself when it is at most `max` bytes long; otherwise its longest prefix that,
/// followed by the marker `… [truncated, N bytes]` (N the length of `s`), is at most `max`
/// bytes, cut at a char boundary. (With `max` below the marker's own length, only the
/// marker is left.)
pub fn cap_bytes(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let marker = marker(s.len());
    let keep = s.floor_char_boundary(max.saturating_sub(marker.len()));
    let mut out = String::with_capacity(keep + marker.len());
    out.push_str(&s[..keep]);
    out.push_str(&marker);
    Cow::Owned(out)
}

/// Whether a character could break a log line or change how the rest of it looks: control
/// characters (C0, DEL, C1: newlines, carriage returns, ANSI escapes), the Unicode line and
/// paragraph separators, and bidirectional overrides and isolates.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if needs_escape(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// `s` for one log line: control characters escaped (`\n` as `\\n`, `\r` as `\\r`, `\t` as
/// `\\t`, others as `\u{1b}`), then capped like [`cap_bytes`] at `max` bytes of escaped
/// text. Only as much of `s` as fits is escaped, so a huge message costs no more than
/// `max`.
pub fn for_log(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max && !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let marker = marker(s.len());
    let room = max.saturating_sub(marker.len());
    let mut out = String::with_capacity(s.len().min(max) + 16);
    // The length of `out` after the last whole escaped piece that ends within `room`:
    // where it is cut if it overflows, so no escape sequence is left half written.
    let mut safe = 0;
    for c in s.chars() {
        push_escaped(&mut out, c);
        if out.len() <= room {
            safe = out.len();
        }
        if out.len() > max {
            out.truncate(safe);
            out.push_str(&marker);
            return Cow::Owned(out);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_untouched() {
        assert!(matches!(cap_bytes("héllo", 6), Cow::Borrowed("héllo")));
        assert!(matches!(for_log("héllo wörld", 100), Cow::Borrowed(_)));
    }

    #[test]
    fn a_cut_lands_on_a_char_boundary_and_is_marked() {
        // "é" is 2 bytes, "€" 3, "😀" 4: every cut position inside each must step back.
        for unit in ["é", "€", "😀"] {
            let s = unit.repeat(2000);
            for max in 40..60 {
                let out = cap_bytes(&s, max);
                assert!(out.len() <= max, "{unit} at {max}: {} bytes", out.len());
                let marker = format!("… [truncated, {} bytes]", s.len());
                assert!(out.ends_with(&marker), "{out}");
                let kept = &out[..out.len() - marker.len()];
                assert!(kept.chars().all(|c| c.to_string() == unit), "{kept}");
                assert!(kept.len() + unit.len() > max - marker.len());
            }
        }
    }

    #[test]
    fn the_old_cut_at_byte_1000_inside_a_character_no_longer_panics() {
        let s = format!("{}€€€€", "a".repeat(999)); // byte 1000 is inside the first `€`
        let out = cap_bytes(&s, 1000);
        assert!(out.len() <= 1000);
        assert!(out.starts_with("aaa"));
        assert!(out.ends_with("[truncated, 1011 bytes]"));
    }

    #[test]
    fn a_max_below_the_marker_leaves_only_the_marker() {
        assert_eq!(cap_bytes("abcdef", 3), "… [truncated, 6 bytes]");
    }

    #[test]
    fn control_characters_are_escaped() {
        let forged = "done\n2026-01-01T00:00:00Z ERROR polyhost: forged\r\x1b[31mred\x1b[0m\t\u{7}\u{85}\u{2028}\u{202e}";
        let out = for_log(forged, 1000);
        assert_eq!(
            out,
            "done\\n2026-01-01T00:00:00Z ERROR polyhost: forged\\r\\u{1b}[31mred\\u{1b}[0m\\t\\u{7}\\u{85}\\u{2028}\\u{202e}"
        );
        assert!(!out.chars().any(needs_escape));
    }

    #[test]
    fn a_huge_log_message_is_escaped_and_capped_in_bytes() {
        let s = "ligne\n€".repeat(200_000); // 1.8 MB
        let out = for_log(&s, 8192);
        assert!(out.len() <= 8192, "{}", out.len());
        assert!(out.ends_with(&format!("… [truncated, {} bytes]", s.len())));
        assert!(!out.contains('\n'));
        assert!(out.starts_with("ligne\\n€ligne\\n€"));
    }

    #[test]
    fn escaping_that_grows_past_the_cap_is_cut_too() {
        let s = "\x1b".repeat(100); // 100 bytes, 600 escaped
        let out = for_log(&s, 200);
        assert!(out.len() <= 200, "{}", out.len());
        assert!(out.ends_with("… [truncated, 100 bytes]"));
        assert!(out.starts_with("\\u{1b}\\u{1b}"));
    }

    #[test]
    fn multibyte_text_at_the_log_cap_is_cut_at_a_char_boundary() {
        for pad in 0..4 {
            let s = format!("{}{}", "x".repeat(pad), "😀".repeat(100));
            for max in 60..70 {
                let out = for_log(&s, max);
                assert!(out.len() <= max);
                assert!(out.ends_with("bytes]"));
            }
        }
    }
}
