//! Tokens as the SDK sees them: where fresh ones come from (the app's
//! callback), and when the one in use expires, read from its claims
//! (PROTOCOL.md §5.1 gives their layout; the signature is the server's
//! business, so it is not checked here).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// What a token callback returns: a new token, or why there is none.
pub type TokenResult = Result<String, Box<dyn std::error::Error + Send + Sync>>;

/// The future a token callback gives.
pub(crate) type TokenFuture = Pin<Box<dyn Future<Output = TokenResult> + Send>>;

/// The app's token callback, shared by every clone of the settings.
#[derive(Clone)]
pub(crate) struct TokenSource(Arc<dyn Fn() -> TokenFuture + Send + Sync>);

impl TokenSource {
    pub(crate) fn new<F, Fut>(f: F) -> TokenSource
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = TokenResult> + Send + 'static,
    {
        TokenSource(Arc::new(move || Box::pin(f())))
    }

    /// Asks the app for a new token.
    pub(crate) fn fetch(&self) -> TokenFuture {
        (self.0)()
    }
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSource")
    }
}

/// When `token` expires, seconds since the Unix epoch; `None` if it does
/// not read as an apm token (an empty dev-mode token, say).
pub(crate) fn expiry(token: &str) -> Option<u64> {
    let (claims, _mac) = token.split_once('.')?;
    let raw = URL_SAFE_NO_PAD.decode(claims).ok()?;
    let ((_user, _role, exp), _rest): ((String, apm_core::message::Role, u64), _) =
        postcard::take_from_bytes(&raw).ok()?;
    Some(exp)
}

/// Milliseconds since the Unix epoch, by the wall clock (token expiry is
/// wall-clock time).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How long before `exp` (seconds) to ask for a new token: a tenth of
/// what is left, between 1 s and 60 s, so a short-lived token is not
/// refreshed constantly and a long one not at the last moment.
pub(crate) fn refresh_at_ms(exp: u64, now_ms: u64) -> u64 {
    let exp_ms = exp.saturating_mul(1000);
    let lead = (exp_ms.saturating_sub(now_ms) / 10).clamp(1_000, 60_000);
    exp_ms.saturating_sub(lead)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(exp: u64) -> String {
        let claims = postcard::to_stdvec(&("alice", apm_core::message::Role::User, exp)).unwrap();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(claims),
            URL_SAFE_NO_PAD.encode([0u8; 32])
        )
    }

    #[test]
    fn the_expiry_is_read_from_the_claims() {
        assert_eq!(expiry(&token(1_700_000_000)), Some(1_700_000_000));
        assert_eq!(expiry(""), None);
        assert_eq!(expiry("not a token"), None);
    }

    #[test]
    fn a_refresh_comes_a_tenth_of_the_time_left_early_within_bounds() {
        let now = 1_000_000_000;
        // 1 hour left: 60 s early (the cap).
        assert_eq!(refresh_at_ms(now / 1000 + 3600, now), now + 3_540_000);
        // 100 s left: 10 s early.
        assert_eq!(refresh_at_ms(now / 1000 + 100, now), now + 90_000);
        // 2 s left: 1 s early (the floor).
        assert_eq!(refresh_at_ms(now / 1000 + 2, now), now + 1_000);
        // Already expired: now.
        assert!(refresh_at_ms(now / 1000 - 5, now) <= now);
    }
}
