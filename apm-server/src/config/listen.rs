//! The listen address as an operator writes it: `IP:PORT`, or
//! `HOST:PORT` (`localhost:7600`) resolved once, when the settings are read.

use std::net::{SocketAddr, ToSocketAddrs};

use serde::{Deserialize, Deserializer};

/// Parses a listen address, resolving a host name. The server binds one
/// socket, so a name that resolves to several addresses gives its first
/// IPv4 one (else its first): `localhost` then means `127.0.0.1`, where
/// the SDK's examples and the demo connect, whatever order the resolver
/// lists `::1` in.
pub(super) fn parse(s: &str) -> Result<SocketAddr, String> {
    // A literal address needs no resolver (nor the time it may take).
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {s:?} (expected IP:PORT or HOST:PORT): {e}"))?
        .collect();
    pick(&addrs).ok_or_else(|| format!("{s:?} resolves to no address"))
}

/// The first IPv4 address, else the first.
fn pick(addrs: &[SocketAddr]) -> Option<SocketAddr> {
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
}

/// [`parse`] for the config file's `listen` key.
pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    parse(&String::deserialize(d)?)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_addresses_pass_through() {
        assert_eq!(
            parse("0.0.0.0:7600"),
            Ok(SocketAddr::from(([0, 0, 0, 0], 7600)))
        );
        let a = parse("[::1]:9").unwrap();
        assert!(a.is_ipv6() && a.ip().is_loopback());
    }

    #[test]
    fn host_names_are_resolved() {
        let a = parse("localhost:7601").unwrap();
        assert!(a.ip().is_loopback(), "{a}");
        assert_eq!(a.port(), 7601);
    }

    #[test]
    fn ipv4_first() {
        let v6: SocketAddr = "[::1]:1".parse().unwrap();
        let v4: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(pick(&[v6, v4]), Some(v4));
        assert_eq!(pick(&[v6]), Some(v6));
        assert_eq!(pick(&[]), None);
    }

    #[test]
    fn what_cannot_be_an_address_says_so() {
        let e = parse("localhost").unwrap_err();
        assert!(e.contains("HOST:PORT"), "{e}");
        assert!(parse("no.such.host.invalid:1").is_err());
    }
}
