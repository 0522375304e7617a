//! Signed client tokens: HMAC-SHA256 over postcard claims.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apm_core::ErrorCode;
use apm_core::message::Role;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What a token asserts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub user: String,
    /// The user's role.
    pub role: Role,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// Longest token accepted; anything longer is not one of ours.
const MAX_TOKEN_LEN: usize = 1024;

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
    let claims = Claims {
        user: user.to_owned(),
        role,
        exp: now_secs().saturating_add(ttl.as_secs()),
    };
    let body = B64.encode(postcard::to_stdvec(&claims).expect("claims serialize"));
    let mut m = mac(secret);
    m.update(body.as_bytes());
    let sig = B64.encode(m.finalize().into_bytes());
    format!("{body}.{sig}")
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
    let claims: Claims = postcard::from_bytes(&raw).map_err(|_| ErrorCode::AuthFailed)?;
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
}
