//! The message rate limits as settings: the `rate_limit_*` strings read
//! into a [`RatePolicy`].

use super::{Config, ConfigError};
use crate::rate::{Rate, RatePolicy};

impl Config {
    /// Every message rate limit, read from the `rate_limit_*` settings.
    pub(crate) fn rate_policy(&self) -> Result<RatePolicy, ConfigError> {
        let rate = |name: &str, text: &str| {
            Rate::parse(text).map_err(|e| ConfigError::Invalid(format!("{name}: {e}")))
        };
        Ok(RatePolicy {
            connection: rate("rate_limit_connection", &self.rate_limit_connection)?,
            user: rate("rate_limit_user", &self.rate_limit_user)?,
            channel: rate("rate_limit_channel", &self.rate_limit_channel)?,
            channel_rules: self
                .rate_limit_channel_rules
                .iter()
                .map(|r| RatePolicy::parse_rule(r))
                .collect::<Result<_, _>>()
                .map_err(|e| ConfigError::Invalid(format!("rate_limit_channel_rules: {e}")))?,
            direct: rate("rate_limit_direct", &self.rate_limit_direct)?,
            admin: rate("rate_limit_admin", &self.rate_limit_admin)?,
        })
    }

    /// Turns every message rate limit off (for tests and benchmarks of
    /// other things).
    pub fn without_rate_limits(mut self) -> Config {
        for setting in [
            &mut self.rate_limit_connection,
            &mut self.rate_limit_user,
            &mut self.rate_limit_channel,
            &mut self.rate_limit_direct,
            &mut self.rate_limit_admin,
        ] {
            *setting = "off".to_owned();
        }
        self.rate_limit_channel_rules.clear();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    #[test]
    fn rate_limits_from_file_and_flags() {
        let c = Config::default();
        let p = c.rate_policy().unwrap();
        let shown = |r: Option<Rate>| r.map(|r| r.to_string());
        assert_eq!(shown(p.user).as_deref(), Some("40/s, burst 40"));
        assert_eq!(
            shown(p.for_channel("any")).as_deref(),
            Some("10/s, burst 10")
        );
        assert_eq!(shown(p.connection).as_deref(), Some("20/s, burst 40"));
        assert!(!p.is_off(false) && !p.is_off(true));

        let o: Overrides = toml::from_str(
            "rate_limit_user = \"100:200\"\nrate_limit_admin = \"off\"\n\
             rate_limit_channel_rules = [\"room.*=5:10\", \"firehose=off\"]\n",
        )
        .unwrap();
        let mut c = Config::default();
        c.apply(o);
        let p = c.rate_policy().unwrap();
        assert_eq!(shown(p.user).as_deref(), Some("100/s, burst 200"));
        assert_eq!(
            shown(p.for_channel("room.1")).as_deref(),
            Some("5/s, burst 10")
        );
        assert_eq!(p.for_channel("firehose"), None);
        assert_eq!(
            shown(p.for_channel("news")).as_deref(),
            Some("10/s, burst 10")
        );
        assert!(p.is_off(true));

        let bad = Config {
            rate_limit_user: "fast".into(),
            ..Config::default()
        };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("rate_limit_user"), "{e}");
        let bad = Config {
            rate_limit_channel_rules: vec!["room.*".into()],
            ..Config::default()
        };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("rate_limit_channel_rules"), "{e}");
        assert!(
            Config::default()
                .without_rate_limits()
                .rate_policy()
                .unwrap()
                .is_off(false)
        );
    }
}
