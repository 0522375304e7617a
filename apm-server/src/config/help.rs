//! Built-in defaults as `--help` shows them.
//!
//! The command-line settings are `Option`s, so that an unset flag leaves
//! the config file's value alone; clap therefore knows no defaults of its
//! own. [`Overrides::show_defaults`](super::Overrides::show_defaults) gives
//! each flag its default from [`Config::default`](super::Config) (one
//! source of truth), and
//! [`Overrides::forget_defaults`](super::Overrides::forget_defaults) drops
//! the values clap then fills in, so the layering stays as it was.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::ValueEnum;

/// A setting's default as the words clap parses back to it; none for a
/// default that is "not set" (a flag's help says what that means).
pub(super) trait Shown {
    fn shown(&self) -> Vec<String>;
}

macro_rules! shown_by_display {
    ($($ty:ty),*) => {
        $(impl Shown for $ty {
            fn shown(&self) -> Vec<String> {
                vec![self.to_string()]
            }
        })*
    };
}

shown_by_display!(SocketAddr, bool, u32, u64, usize);

impl Shown for String {
    fn shown(&self) -> Vec<String> {
        if self.is_empty() {
            Vec::new()
        } else {
            vec![self.clone()]
        }
    }
}

impl Shown for Vec<String> {
    fn shown(&self) -> Vec<String> {
        self.clone()
    }
}

impl Shown for PathBuf {
    fn shown(&self) -> Vec<String> {
        if self.as_os_str().is_empty() {
            Vec::new()
        } else {
            vec![self.display().to_string()]
        }
    }
}

impl Shown for super::HttpListen {
    fn shown(&self) -> Vec<String> {
        vec![self.to_string()]
    }
}

/// The name `--help` lists among the possible values.
fn value_name<T: ValueEnum>(v: &T) -> Vec<String> {
    v.to_possible_value()
        .map(|p| vec![p.get_name().to_owned()])
        .unwrap_or_default()
}

impl Shown for super::SlowConsumerPolicy {
    fn shown(&self) -> Vec<String> {
        value_name(self)
    }
}

impl Shown for super::DirectMessages {
    fn shown(&self) -> Vec<String> {
        value_name(self)
    }
}

impl Shown for crate::store::StoreKind {
    fn shown(&self) -> Vec<String> {
        value_name(self)
    }
}

impl Shown for crate::logs::LogFormat {
    fn shown(&self) -> Vec<String> {
        value_name(self)
    }
}
