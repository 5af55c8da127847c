//! Untrusted bytes (paths, argv) as text. Kernel data need not be UTF-8, and
//! the mapping must be reversible: valid UTF-8 passes through, a backslash is
//! written `\\`, and every byte that is not valid UTF-8 is written `\xHH`.

use std::fmt::Write;

pub fn escape_bytes(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// argv as the kernel holds it (NUL separated, NUL terminated) -> one line,
/// arguments separated by a space, as Sysmon writes CommandLine.
pub fn command_line(argv: &[u8]) -> String {
    let trimmed = argv.strip_suffix(&[0]).unwrap_or(argv);
    let joined: Vec<u8> = trimmed.iter().map(|&b| if b == 0 { b' ' } else { b }).collect();
    escape_bytes(&joined)
}

/// `-` for an unknown value, as Sysmon writes it.
pub fn or_dash(raw: &[u8]) -> String {
    if raw.is_empty() {
        "-".to_string()
    } else {
        escape_bytes(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_passes_and_invalid_bytes_are_hex() {
        assert_eq!(escape_bytes("/usr/bin/ünï".as_bytes()), "/usr/bin/ünï");
        assert_eq!(escape_bytes(b"a\xffb\xc3"), "a\\xffb\\xc3");
        assert_eq!(escape_bytes(b"back\\slash"), "back\\\\slash");
        assert_eq!(escape_bytes(b"line\nquote\""), "line\nquote\"");
    }

    #[test]
    fn argv_joins_with_spaces() {
        assert_eq!(command_line(b"curl\0-s\0http://x\0"), "curl -s http://x");
        assert_eq!(command_line(b""), "");
        assert_eq!(or_dash(b""), "-");
    }
}
