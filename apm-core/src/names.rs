//! Rules for channel names and user ids.

use crate::error::DecodeError;
use crate::limits::Limits;

/// Prefix of channels the server owns (`$presence`, ...). Clients may
/// subscribe to them but never publish to them.
pub const SYSTEM_PREFIX: char = '$';

/// The channel that carries `Online` / `Offline` presence events.
pub const PRESENCE_CHANNEL: &str = "$presence";

/// Characters that show nothing (or change how their neighbours show)
/// and so let two names that look the same differ: every format
/// character (general category `Cf`, Unicode 16) and every
/// `Default_Ignorable_Code_Point`, assigned or not. Sorted inclusive
/// ranges, so a lookup is a binary search.
const INVISIBLE: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),   // soft hyphen
    ('\u{034F}', '\u{034F}'),   // combining grapheme joiner
    ('\u{0600}', '\u{0605}'),   // Arabic number signs
    ('\u{061C}', '\u{061C}'),   // Arabic letter mark
    ('\u{06DD}', '\u{06DD}'),   // Arabic end of ayah
    ('\u{070F}', '\u{070F}'),   // Syriac abbreviation mark
    ('\u{0890}', '\u{0891}'),   // Arabic pound and piastre marks above
    ('\u{08E2}', '\u{08E2}'),   // Arabic disputed end of ayah
    ('\u{115F}', '\u{1160}'),   // Hangul choseong and jungseong fillers
    ('\u{17B4}', '\u{17B5}'),   // Khmer inherent vowels
    ('\u{180B}', '\u{180F}'),   // Mongolian variation selectors, vowel separator
    ('\u{200B}', '\u{200F}'),   // zero width space, ZWNJ, ZWJ, LRM, RLM
    ('\u{202A}', '\u{202E}'),   // bidi embeddings and overrides
    ('\u{2060}', '\u{206F}'),   // word joiner, invisible operators, bidi isolates
    ('\u{3164}', '\u{3164}'),   // Hangul filler
    ('\u{FE00}', '\u{FE0F}'),   // variation selectors
    ('\u{FEFF}', '\u{FEFF}'),   // zero width no-break space (BOM)
    ('\u{FFA0}', '\u{FFA0}'),   // halfwidth Hangul filler
    ('\u{FFF0}', '\u{FFFB}'),   // unassigned ignorables, interlinear annotation
    ('\u{110BD}', '\u{110BD}'), // Kaithi number sign
    ('\u{110CD}', '\u{110CD}'), // Kaithi number sign above
    ('\u{13430}', '\u{1343F}'), // Egyptian hieroglyph format controls
    ('\u{1BCA0}', '\u{1BCA3}'), // shorthand format controls
    ('\u{1D173}', '\u{1D17A}'), // musical symbol format controls
    ('\u{E0000}', '\u{E0FFF}'), // tags, variation selectors supplement
];

/// Whether `c` is one of the invisible characters names may not hold.
pub fn is_invisible(c: char) -> bool {
    INVISIBLE
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Checks a channel name or user id: 1 to `max_name_len` bytes of UTF-8
/// with no whitespace, no control characters and no invisible characters
/// ([`is_invisible`]).
pub fn validate_name(name: &str, limits: &Limits) -> Result<(), DecodeError> {
    let bad = |why: &'static str| DecodeError::InvalidName {
        name: shown(name),
        why,
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > limits.max_name_len {
        return Err(bad("too long"));
    }
    // Almost every name is ASCII, checked a byte at a time; the ranges are
    // searched only for the others.
    if name.is_ascii() {
        if name.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(bad("whitespace or control character"));
        }
        return Ok(());
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("whitespace or control character"));
    }
    if name.chars().any(is_invisible) {
        return Err(bad("invisible or format character"));
    }
    Ok(())
}

/// `name` cut to 64 characters, with what would not show written as
/// `\u{...}`, so that a log line or error text says what was refused.
fn shown(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().take(64) {
        // A plain space shows inside the quotes; every other space does not.
        if (c.is_whitespace() && c != ' ') || c.is_control() || is_invisible(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether a channel is reserved for the server.
pub fn is_system_channel(name: &str) -> bool {
    name.starts_with(SYSTEM_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let l = Limits::default();
        assert!(validate_name("room.1", &l).is_ok());
        assert!(validate_name("чат", &l).is_ok());
        assert!(validate_name("", &l).is_err());
        assert!(validate_name("a b", &l).is_err());
        assert!(validate_name("a\u{0}", &l).is_err());
        assert!(validate_name("a\u{7f}", &l).is_err());
        assert!(validate_name("a\u{a0}b", &l).is_err());
        let shown = |n: &str| validate_name(n, &l).unwrap_err().to_string();
        assert!(shown("alice smith").contains("\"alice smith\""));
        assert!(shown("a\u{a0}b").contains("\"a\\u{a0}b\""));
        assert!(validate_name(&"x".repeat(129), &l).is_err());
        assert!(validate_name(&"x".repeat(128), &l).is_ok());
    }

    #[test]
    fn invisible_characters_are_refused() {
        let l = Limits::default();
        for c in [
            '\u{00AD}',
            '\u{034F}',
            '\u{061C}',
            '\u{115F}',
            '\u{1160}',
            '\u{180E}',
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{200E}',
            '\u{200F}',
            '\u{202A}',
            '\u{202E}',
            '\u{2060}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{3164}',
            '\u{FE0F}',
            '\u{FEFF}',
            '\u{FFA0}',
            '\u{FFF9}',
            '\u{1343F}',
            '\u{1D173}',
            '\u{E0001}',
            '\u{E0041}',
            '\u{E0100}',
            '\u{E01EF}',
        ] {
            let name = format!("alice{c}");
            let e = validate_name(&name, &l).unwrap_err();
            assert!(
                e.to_string().contains("invisible"),
                "U+{:04X}: {e}",
                c as u32
            );
            // The reason shows where the character is, escaped.
            assert!(e.to_string().contains("\\u{"), "U+{:04X}: {e}", c as u32);
        }
    }

    #[test]
    fn visible_neighbours_pass() {
        let l = Limits::default();
        // Next to the refused ranges, and scripts that use joiners nearby.
        for name in [
            "\u{00AC}not",
            "a\u{034E}",
            "\u{0606}x",
            "\u{1161}",
            "\u{3165}",
            "\u{FFA1}",
            "\u{FFFC}",
            "क्षत्रिय",
            "مرحبا",
            "😀",
            "\u{E1000}",
        ] {
            assert!(validate_name(name, &l).is_ok(), "{name:?}");
        }
    }

    #[test]
    fn table_is_sorted_and_disjoint() {
        for w in INVISIBLE.windows(2) {
            assert!(w[0].0 <= w[0].1 && w[0].1 < w[1].0, "{w:?}");
        }
    }
}
