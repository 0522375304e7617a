//! Signed client tokens: HMAC-SHA256 over postcard claims.
//!
//! The claims are the user, the role and the expiry, then, only when
//! there are any, the channels the token grants: a token without channel
//! claims is byte for byte what it was before they existed, and one with
//! them is read by older servers as the same token without them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apm_core::ErrorCode;
use apm_core::message::Role;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What a token asserts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The user id.
    pub user: String,
    /// The user's role.
    pub role: Role,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Members-only channels the user may use: names, or prefixes ending
    /// in `*`. Empty in tokens that grant none (and in every token minted
    /// before channel claims existed).
    pub channels: Vec<String>,
}

/// The claims every token has, in their wire order; the channel list,
/// if any, follows them.
#[derive(Serialize, Deserialize)]
struct Base {
    user: String,
    role: Role,
    exp: u64,
}

impl Claims {
    fn encode(&self) -> Vec<u8> {
        let base = Base {
            user: self.user.clone(),
            role: self.role,
            exp: self.exp,
        };
        let mut raw = postcard::to_stdvec(&base).expect("claims serialize");
        if !self.channels.is_empty() {
            raw.extend(postcard::to_stdvec(&self.channels).expect("claims serialize"));
        }
        raw
    }

    /// The claims in `raw`, which must be consumed exactly.
    fn decode(raw: &[u8]) -> Option<Claims> {
        let (base, rest) = postcard::take_from_bytes::<Base>(raw).ok()?;
        let channels = if rest.is_empty() {
            Vec::new()
        } else {
            match postcard::take_from_bytes::<Vec<String>>(rest).ok()? {
                (channels, []) => channels,
                _ => return None,
            }
        };
        Some(Claims {
            user: base.user,
            role: base.role,
            exp: base.exp,
            channels,
        })
    }
}

/// Longest token accepted; anything longer is not one of ours.
const MAX_TOKEN_LEN: usize = 1024;

/// Shortest secret the server accepts, in bytes: a shorter HMAC key is
/// within reach of guessing.
pub const MIN_SECRET_LEN: usize = 16;

/// Why a token is not minted: the server would refuse its secret, or the
/// token itself.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    /// No secret, or an empty one.
    #[error("no secret: pass --secret, set APM_SECRET, or set `secret` in the config file")]
    NoSecret,
    /// A secret the server refuses to start with.
    #[error("the secret is {0} bytes; the server needs at least {MIN_SECRET_LEN}")]
    ShortSecret(usize),
    /// A user id the handshake would refuse.
    #[error("the user id is refused: {0}")]
    User(String),
    /// A channel claim that is neither a valid channel name nor one
    /// followed by `*`.
    #[error("the channel claim {0:?} is neither a channel name nor a prefix ending in *")]
    Channel(String),
    /// A validity the token cannot express: expiry counts whole seconds, so
    /// a token valid for less than one would be expired when minted.
    #[error("the TTL must be at least 1s (a token's expiry counts whole seconds)")]
    ShortTtl,
}

/// Checks a signing secret as the server does at start.
pub fn check_secret(secret: &str) -> Result<(), MintError> {
    match secret.len() {
        0 => Err(MintError::NoSecret),
        n if n < MIN_SECRET_LEN => Err(MintError::ShortSecret(n)),
        _ => Ok(()),
    }
}

/// [`mint_with_channels`], after refusing what a server with these
/// `limits` would refuse: a missing or short secret, a user id its naming
/// rules refuse (empty, longer than `limits.max_name_len`, whitespace,
/// control or invisible characters), a channel claim that is not a
/// channel name or a prefix of one followed by `*`, a TTL under one
/// second.
///
/// # Examples
///
/// ```
/// use apm_core::message::Role;
/// use apm_server::auth::{MintError, mint_checked};
/// use std::time::Duration;
///
/// let limits = apm_core::Limits::default();
/// let hour = Duration::from_secs(3600);
/// let team = ["private.team".to_owned()];
/// assert!(mint_checked("0123456789abcdef", "alice", Role::User, hour, &team, &limits).is_ok());
/// assert_eq!(
///     mint_checked("short", "alice", Role::User, hour, &[], &limits),
///     Err(MintError::ShortSecret(5))
/// );
/// ```
pub fn mint_checked(
    secret: &str,
    user: &str,
    role: Role,
    ttl: Duration,
    channels: &[String],
    limits: &apm_core::Limits,
) -> Result<String, MintError> {
    check_secret(secret)?;
    apm_core::names::validate_name(user, limits).map_err(|e| MintError::User(e.to_string()))?;
    if user.starts_with('$') {
        return Err(MintError::User(
            "user ids starting with `$` belong to the server (the HTTP API's senders)".into(),
        ));
    }
    for claim in channels {
        let name = claim.strip_suffix('*').unwrap_or(claim);
        // `*` alone claims every channel.
        if claim != "*" && apm_core::names::validate_name(name, limits).is_err() {
            return Err(MintError::Channel(claim.clone()));
        }
    }
    if ttl.as_secs() == 0 {
        return Err(MintError::ShortTtl);
    }
    Ok(mint_with_channels(
        secret.as_bytes(),
        user,
        role,
        ttl,
        channels,
    ))
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length")
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Mints a token for `user` valid for `ttl`.
///
/// # Examples
///
/// ```
/// use apm_core::message::Role;
/// use std::time::Duration;
///
/// let token = apm_server::auth::mint(b"0123456789abcdef", "alice", Role::User, Duration::from_secs(60));
/// let claims = apm_server::auth::verify(b"0123456789abcdef", &token).unwrap();
/// assert_eq!(claims.user, "alice");
/// ```
pub fn mint(secret: &[u8], user: &str, role: Role, ttl: Duration) -> String {
    mint_with_channels(secret, user, role, ttl, &[])
}

/// Mints a token for `user` valid for `ttl` that claims `channels`
/// (names, or prefixes ending in `*`) for members-only channels.
///
/// # Examples
///
/// ```
/// use apm_core::message::Role;
/// use std::time::Duration;
///
/// let secret = b"0123456789abcdef";
/// let hour = Duration::from_secs(3600);
/// let token = apm_server::auth::mint_with_channels(secret, "alice", Role::User, hour, &["private.*".into()]);
/// let claims = apm_server::auth::verify(secret, &token).unwrap();
/// assert_eq!(claims.channels, ["private.*"]);
/// ```
pub fn mint_with_channels(
    secret: &[u8],
    user: &str,
    role: Role,
    ttl: Duration,
    channels: &[String],
) -> String {
    let claims = Claims {
        user: user.to_owned(),
        role,
        exp: now_secs().saturating_add(ttl.as_secs()),
        channels: channels.to_vec(),
    };
    let body = B64.encode(claims.encode());
    let mut m = mac(secret);
    m.update(body.as_bytes());
    let sig = B64.encode(m.finalize().into_bytes());
    format!("{body}.{sig}")
}

/// What a subscription token grants: `user` may use `channel` (a
/// members-only one) until `exp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionClaims {
    /// The user it is for.
    pub user: String,
    /// The channel it opens.
    pub channel: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// What a subscription token's MAC covers before its claims, so that a
/// session token never verifies as a subscription token, nor the reverse.
const SUBSCRIPTION_DOMAIN: &[u8] = b"apm subscription token\0";

/// Mints a subscription token: lets `user` use the members-only
/// `channel` for `ttl` (PROTOCOL.md §5.10). A backend mints one when it
/// decides a user may join a channel, without a new session token.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let secret = b"0123456789abcdef";
/// let token = apm_server::auth::mint_subscription(secret, "alice", "staff", Duration::from_secs(60));
/// let claims = apm_server::auth::verify_subscription(secret, &token).unwrap();
/// assert_eq!((claims.user.as_str(), claims.channel.as_str()), ("alice", "staff"));
/// assert!(apm_server::auth::verify(secret, &token).is_err(), "not a session token");
/// ```
pub fn mint_subscription(secret: &[u8], user: &str, channel: &str, ttl: Duration) -> String {
    let exp = now_secs().saturating_add(ttl.as_secs());
    let raw = postcard::to_stdvec(&(user, channel, exp)).expect("claims serialize");
    let body = B64.encode(raw);
    let mut m = mac(secret);
    m.update(SUBSCRIPTION_DOMAIN);
    m.update(body.as_bytes());
    let sig = B64.encode(m.finalize().into_bytes());
    format!("{body}.{sig}")
}

/// Checks a subscription token's signature and expiry.
pub fn verify_subscription(secret: &[u8], token: &str) -> Result<SubscriptionClaims, ErrorCode> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(ErrorCode::AuthFailed);
    }
    let (body, sig) = token.split_once('.').ok_or(ErrorCode::AuthFailed)?;
    let sig = B64.decode(sig).map_err(|_| ErrorCode::AuthFailed)?;
    let mut m = mac(secret);
    m.update(SUBSCRIPTION_DOMAIN);
    m.update(body.as_bytes());
    m.verify_slice(&sig).map_err(|_| ErrorCode::AuthFailed)?;
    let raw = B64.decode(body).map_err(|_| ErrorCode::AuthFailed)?;
    let (user, channel, exp): (String, String, u64) =
        postcard::from_bytes(&raw).map_err(|_| ErrorCode::AuthFailed)?;
    if exp <= now_secs() {
        return Err(ErrorCode::TokenExpired);
    }
    Ok(SubscriptionClaims { user, channel, exp })
}

/// Checks a token's signature and expiry.
///
/// Fails with `AuthFailed` for anything malformed or wrongly signed and
/// `TokenExpired` for a good token past its expiry.
pub fn verify(secret: &[u8], token: &str) -> Result<Claims, ErrorCode> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(ErrorCode::AuthFailed);
    }
    let (body, sig) = token.split_once('.').ok_or(ErrorCode::AuthFailed)?;
    let sig = B64.decode(sig).map_err(|_| ErrorCode::AuthFailed)?;
    let mut m = mac(secret);
    m.update(body.as_bytes());
    // verify_slice compares in constant time.
    m.verify_slice(&sig).map_err(|_| ErrorCode::AuthFailed)?;
    let raw = B64.decode(body).map_err(|_| ErrorCode::AuthFailed)?;
    let claims = Claims::decode(&raw).ok_or(ErrorCode::AuthFailed)?;
    if claims.exp <= now_secs() {
        return Err(ErrorCode::TokenExpired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef";

    #[test]
    fn good_bad_expired() {
        let t = mint(SECRET, "bob", Role::Admin, Duration::from_secs(60));
        let c = verify(SECRET, &t).unwrap();
        assert_eq!((c.user.as_str(), c.role), ("bob", Role::Admin));
        assert_eq!(verify(b"another secret!!", &t), Err(ErrorCode::AuthFailed));
        let mut tampered = t.clone();
        tampered.insert(1, 'x');
        assert_eq!(verify(SECRET, &tampered), Err(ErrorCode::AuthFailed));
        assert_eq!(verify(SECRET, "garbage"), Err(ErrorCode::AuthFailed));
        let old = mint(SECRET, "bob", Role::User, Duration::ZERO);
        assert_eq!(verify(SECRET, &old), Err(ErrorCode::TokenExpired));
    }

    #[test]
    fn minting_refuses_what_the_server_refuses() {
        let limits = apm_core::Limits::default();
        let secret = "0123456789abcdef";
        let hour = Duration::from_secs(3600);
        let mint = |secret: &str, user: &str, ttl| {
            mint_checked(secret, user, Role::User, ttl, &[], &limits)
        };
        let token = mint(secret, "alice", hour).unwrap();
        assert_eq!(verify(secret.as_bytes(), &token).unwrap().user, "alice");

        assert_eq!(mint("", "alice", hour), Err(MintError::NoSecret));
        assert_eq!(
            mint("fifteen bytes!!", "alice", hour),
            Err(MintError::ShortSecret(15))
        );
        for user in [
            "",
            "a b",
            "tab\there",
            "nul\0",
            "alice\u{200b}",
            "\u{202e}evil",
            &"x".repeat(limits.max_name_len + 1),
        ] {
            let e = mint(secret, user, hour).unwrap_err();
            assert!(matches!(e, MintError::User(_)), "{user:?}: {e}");
        }
        assert!(mint(secret, &"x".repeat(limits.max_name_len), hour).is_ok());
        let tight = apm_core::Limits {
            max_name_len: 4,
            ..limits
        };
        assert!(matches!(
            mint_checked(secret, "alice", Role::User, hour, &[], &tight),
            Err(MintError::User(_))
        ));
        assert_eq!(
            mint(secret, "alice", Duration::ZERO),
            Err(MintError::ShortTtl)
        );
        assert_eq!(
            mint(secret, "alice", Duration::from_millis(999)),
            Err(MintError::ShortTtl)
        );
        assert!(mint(secret, "alice", Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn channel_claims_and_tokens_from_before_them() {
        let hour = Duration::from_secs(3600);
        // A token as minted before channel claims: the three fields alone.
        let old = Base {
            user: "bob".into(),
            role: Role::User,
            exp: now_secs() + 60,
        };
        let body = B64.encode(postcard::to_stdvec(&old).unwrap());
        let mut m = mac(SECRET);
        m.update(body.as_bytes());
        let token = format!("{body}.{}", B64.encode(m.finalize().into_bytes()));
        let c = verify(SECRET, &token).unwrap();
        assert_eq!((c.user.as_str(), c.channels.len()), ("bob", 0));
        // Without claims a token is still that, byte for byte.
        let plain = mint(SECRET, "bob", Role::User, hour);
        let (body, _) = plain.split_once('.').unwrap();
        assert_eq!(
            B64.decode(body).unwrap(),
            postcard::to_stdvec(&Base {
                exp: verify(SECRET, &plain).unwrap().exp,
                ..old
            })
            .unwrap()
        );
        // With claims, the list follows.
        let team = vec!["private.team".to_owned(), "ops.*".to_owned()];
        let t = mint_with_channels(SECRET, "bob", Role::User, hour, &team);
        assert_eq!(verify(SECRET, &t).unwrap().channels, team);
        // Trailing bytes after the list are not a token of ours.
        let mut raw = Claims::decode(&B64.decode(t.split_once('.').unwrap().0).unwrap())
            .unwrap()
            .encode();
        raw.push(0);
        assert_eq!(Claims::decode(&raw), None);
        // Minting refuses claims the server could never match.
        let limits = apm_core::Limits::default();
        let secret = "0123456789abcdef";
        for bad in ["", "a b*", "x\u{200b}"] {
            let e = mint_checked(secret, "bob", Role::User, hour, &[bad.into()], &limits);
            assert_eq!(e, Err(MintError::Channel(bad.into())));
        }
        for good in ["*", "private.*", "team"] {
            assert!(mint_checked(secret, "bob", Role::User, hour, &[good.into()], &limits).is_ok());
        }
    }
}
