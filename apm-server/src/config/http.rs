//! The HTTP API's settings as an operator writes them: where it listens
//! (or nowhere), and API keys as `NAME=KEY` lines.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Deserializer};

/// Where the HTTP API (and `/metrics`, `/healthz`, `/readyz`) listens:
/// nowhere unless an address is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HttpListen(pub Option<SocketAddr>);

impl fmt::Display for HttpListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{addr}"),
            None => f.write_str("off"),
        }
    }
}

/// Parses `off` (or nothing) or an address as `--listen` takes it.
pub(super) fn parse_listen(s: &str) -> Result<HttpListen, String> {
    match s.trim() {
        "" | "off" => Ok(HttpListen(None)),
        addr => super::listen::parse(addr).map(|a| HttpListen(Some(a))),
    }
}

/// [`parse_listen`] for the config file's `http_listen` key.
pub(super) fn deserialize_listen<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<HttpListen>, D::Error> {
    parse_listen(&String::deserialize(d)?)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// What stands before the name an API caller gives its messages' sender
/// (`$api/orders`): a `$` name, so it is never a user id a token names.
pub const API_SENDER_PREFIX: &str = "$api/";

/// The most bytes in the name after [`API_SENDER_PREFIX`].
pub const API_NAME_MAX: usize = 64;

/// The fewest bytes an API key may have: shorter ones can be guessed.
pub const API_KEY_MIN: usize = 16;

/// Checks the name of an API key or of an API sender: 1 to
/// [`API_NAME_MAX`] ASCII letters, digits, `.`, `_` or `-`.
pub fn check_api_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > API_NAME_MAX {
        return Err(format!(
            "the name {name:?} must have 1 to {API_NAME_MAX} characters"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(format!(
            "the name {name:?} may hold only ASCII letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// One API key as written: `NAME=KEY`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Who holds it: logged, and the default sender of its messages.
    pub name: String,
    /// The secret itself.
    pub key: Vec<u8>,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key itself never reaches a log line.
        f.debug_struct("ApiKey").field("name", &self.name).finish()
    }
}

impl ApiKey {
    /// Parses `NAME=KEY`: NAME as [`check_api_name`] allows, KEY at least
    /// [`API_KEY_MIN`] bytes without whitespace.
    pub fn parse(line: &str) -> Result<ApiKey, String> {
        let line = line.trim();
        let Some((name, key)) = line.split_once('=') else {
            return Err("an API key is written NAME=KEY".to_owned());
        };
        let (name, key) = (name.trim(), key.trim());
        check_api_name(name).map_err(|e| format!("API key {e}"))?;
        if key.len() < API_KEY_MIN {
            return Err(format!(
                "the API key named {name:?} must have at least {API_KEY_MIN} bytes"
            ));
        }
        if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "the API key named {name:?} holds whitespace or a control character"
            ));
        }
        Ok(ApiKey {
            name: name.to_owned(),
            key: key.as_bytes().to_vec(),
        })
    }

    /// Parses a keys file: one `NAME=KEY` a line; blank lines and lines
    /// starting with `#` are skipped. An error names the line.
    pub fn parse_file(text: &str) -> Result<Vec<ApiKey>, String> {
        text.lines()
            .enumerate()
            .filter(|(_, l)| {
                let l = l.trim();
                !l.is_empty() && !l.starts_with('#')
            })
            .map(|(i, l)| ApiKey::parse(l).map_err(|e| format!("line {}: {e}", i + 1)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_is_off_unless_given() {
        assert_eq!(parse_listen("off"), Ok(HttpListen(None)));
        assert_eq!(parse_listen(""), Ok(HttpListen(None)));
        let on = parse_listen("127.0.0.1:9090").unwrap();
        assert_eq!(on.0.map(|a| a.port()), Some(9090));
        assert!(parse_listen("nowhere").is_err());
    }

    #[test]
    fn keys_and_names() {
        let k = ApiKey::parse("orders = 0123456789abcdef0").unwrap();
        assert_eq!(
            (k.name.as_str(), &k.key[..]),
            ("orders", &b"0123456789abcdef0"[..])
        );
        assert!(!format!("{k:?}").contains("0123"), "keys stay out of logs");
        for bad in [
            "orders",
            "=0123456789abcdef",
            "or ders=0123456789abcdef",
            "$x=0123456789abcdef",
            "orders=short",
            "orders=0123456789 abcdef",
        ] {
            assert!(ApiKey::parse(bad).is_err(), "{bad:?}");
        }
        let keys =
            ApiKey::parse_file("# keys\n\na=0123456789abcdef\nb=fedcba9876543210\n").unwrap();
        assert_eq!(keys.len(), 2);
        let e = ApiKey::parse_file("a=0123456789abcdef\nnonsense\n").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
    }
}
