//! Safe file names from user names.
//!
//! Xpert user names may contain anything: `../`, `/`, `\`, NUL, a thousand characters,
//! any Unicode. Per-user files (`<name>.ics`, `<name>.log`) get their name from
//! [`encode`], a deterministic and injective mapping to one safe path component:
//!
//! - `A-Z a-z 0-9 _ -` are kept, `.` is kept except at the start;
//! - every other byte of the UTF-8 name is written `%XX` (upper-case hex), so `a/b` becomes
//!   `a%2Fb` and `%` itself becomes `%25` (`a_b` and `a%2Fb` stay distinct);
//! - the empty name becomes `%` (no other name encodes to a lone `%`);
//! - an encoding longer than [`MAX_STEM_BYTES`] is cut to a prefix (never inside a `%XX`)
//!   followed by `~` and the hex SHA-256 of the full name (`~` never appears otherwise).
//!
//! The result is never empty, never `.` or `..`, never starts with `.`, and holds no
//! separator, so [`safe_path`] always names a direct child of its directory.
//!
//! Case-insensitive file systems would fold `MMuster` and `mmuster` into one file; the
//! service runs on a case-sensitive one.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Longest encoded name kept as is (bytes); longer ones are shortened with a hash.
pub const MAX_STEM_BYTES: usize = 200;

/// Length of the readable prefix kept in front of the hash of a long name.
const HASHED_PREFIX_BYTES: usize = 100;

/// Map any user name to a safe, non-empty, single path component (without extension).
pub fn encode(username: &str) -> String {
    if username.is_empty() {
        return "%".to_owned();
    }
    let mut out = String::with_capacity(username.len());
    for (i, b) in username.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0) {
            out.push(char::from(b));
        } else {
            push_percent(&mut out, b);
        }
    }
    if out.len() <= MAX_STEM_BYTES {
        return out;
    }
    // Cut at a byte that does not sit inside a `%XX` triple.
    let mut cut = HASHED_PREFIX_BYTES;
    while cut > 0
        && (out.as_bytes()[cut - 1] == b'%' || (cut >= 2 && out.as_bytes()[cut - 2] == b'%'))
    {
        cut -= 1;
    }
    out.truncate(cut);
    out.push('~');
    out.push_str(&sha256_hex(username.as_bytes()));
    out
}

/// `dir/<encode(username)>.<ext>`: always a direct child of `dir`. `ext` is written
/// through the same encoding (callers pass fixed extensions like `ics` or `log`).
pub fn safe_path(dir: &Path, username: &str, ext: &str) -> PathBuf {
    let mut name = encode(username);
    if !ext.is_empty() {
        name.push('.');
        for b in ext.bytes() {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.' {
                name.push(char::from(b));
            } else {
                push_percent(&mut name, b);
            }
        }
    }
    dir.join(name)
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push(char::from(HEX_LOWER[usize::from(b >> 4)]));
        hex.push(char::from(HEX_LOWER[usize::from(b & 0x0f)]));
    }
    hex
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";
const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";

fn push_percent(out: &mut String, b: u8) {
    out.push('%');
    out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
    out.push(char::from(HEX_UPPER[usize::from(b & 0x0f)]));
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Component;

    use super::*;

    fn assert_safe(name: &str) {
        let stem = encode(name);
        assert!(!stem.is_empty(), "{name:?}");
        assert!(stem != "." && stem != "..", "{name:?}");
        assert!(!stem.starts_with('.'), "{name:?} -> {stem}");
        assert!(
            stem.len() <= MAX_STEM_BYTES,
            "{name:?} -> {} bytes",
            stem.len()
        );
        assert!(
            stem.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.%~".contains(&b)),
            "{name:?} -> {stem}"
        );
        let dir = Path::new("/srv/livesync/ics");
        let path = safe_path(dir, name, "ics");
        assert_eq!(path.parent(), Some(dir), "{name:?} -> {path:?}");
        let last: Vec<_> = path.strip_prefix(dir).unwrap().components().collect();
        assert_eq!(last.len(), 1, "{name:?} -> {path:?}");
        assert!(
            matches!(last[0], Component::Normal(_)),
            "{name:?} -> {path:?}"
        );
    }

    #[test]
    fn plain_names_stay_readable() {
        assert_eq!(encode("mmuster"), "mmuster");
        assert_eq!(encode("M.Muster-2_a"), "M.Muster-2_a");
        assert_eq!(encode("a/b"), "a%2Fb");
        assert_eq!(encode("a_b"), "a_b");
        assert_eq!(encode("a%2Fb"), "a%252Fb");
        assert_eq!(encode("KANZLEI\\mm"), "KANZLEI%5Cmm");
        assert_eq!(encode("Jürgen"), "J%C3%BCrgen");
        assert_eq!(encode(""), "%");
        assert_eq!(encode("."), "%2E");
        assert_eq!(encode(".."), "%2E.");
        assert_eq!(encode("../etc/passwd"), "%2E.%2Fetc%2Fpasswd");
        assert_eq!(encode("a\0b"), "a%00b");
        assert_eq!(encode(" x "), "%20x%20");
    }

    #[test]
    fn hostile_names_are_direct_children() {
        for name in [
            "",
            ".",
            "..",
            "../",
            "../../etc/passwd",
            "/",
            "//",
            "\\",
            "..\\..\\x",
            "\0",
            "a\0",
            "~",
            "%",
            "%2F",
            ".hidden",
            "a/../../b",
            "C:\\Windows",
            "\u{202e}evil",
            "name.ics",
            "ä",
            "👩‍⚖️",
        ] {
            assert_safe(name);
        }
        assert_safe(&"x".repeat(1000));
        assert_safe(&"/".repeat(1000));
        assert_safe(&"ä".repeat(1000));
        assert_safe(&"%".repeat(1000));
    }

    #[test]
    fn long_names_keep_a_prefix_and_a_hash() {
        let long = "a".repeat(1000);
        let stem = encode(&long);
        assert!(stem.starts_with(&"a".repeat(HASHED_PREFIX_BYTES)));
        assert!(stem.ends_with(&sha256_hex(long.as_bytes())));
        let slashes = "/".repeat(300);
        let stem = encode(&slashes);
        let (prefix, _) = stem.split_once('~').unwrap();
        assert_eq!(prefix.len() % 3, 0, "prefix never cuts a %XX: {prefix}");
        // Exactly at the limit: no hash; one byte more: hashed.
        assert_eq!(
            encode(&"b".repeat(MAX_STEM_BYTES)),
            "b".repeat(MAX_STEM_BYTES)
        );
        assert!(encode(&"b".repeat(MAX_STEM_BYTES + 1)).contains('~'));
    }

    /// A small deterministic generator (xorshift) so the property test needs no crate.
    struct Gen(u64);
    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn name(&mut self) -> String {
            const ALPHABET: &[char] = &[
                'a', 'b', 'Z', '0', '.', '/', '\\', '%', '_', '-', '~', ' ', '\0', '\n', ':', 'ä',
                'ß', '€', '😀', '2', 'F', 'E',
            ];
            let len = match self.next() % 10 {
                0 => (self.next() % 1000) as usize,
                1 => 60 + (self.next() % 20) as usize,
                _ => (self.next() % 8) as usize,
            };
            (0..len)
                .map(|_| ALPHABET[(self.next() % ALPHABET.len() as u64) as usize])
                .collect()
        }
    }

    #[test]
    fn many_generated_names_never_collide_and_stay_inside() {
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        let mut seen: HashMap<String, String> = HashMap::new();
        for _ in 0..20_000 {
            let name = g.name();
            assert_safe(&name);
            let stem = encode(&name);
            assert_eq!(stem, encode(&name), "deterministic");
            if let Some(other) = seen.insert(stem.clone(), name.clone()) {
                assert_eq!(other, name, "collision on {stem}");
            }
        }
        assert!(
            seen.len() > 5_000,
            "generator produced too few distinct names"
        );
    }
}
