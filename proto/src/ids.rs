//! User and device ids, and the NATS subjects built from them.
//!
//! A user id becomes one token of a NATS subject, so it is validated before any
//! subject is built: `^[A-Za-z0-9_-]{1,64}$`. That rule keeps out the characters NATS
//! gives meaning to (`.`, `*`, `>`, whitespace) and anything a shell or a URL would
//! need escaped.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Longest accepted id, in bytes (all accepted characters are ASCII).
pub const MAX_ID_LEN: usize = 64;

/// Subject prefix of the durable per-user log (stream `NOTIFY`).
pub const NOTIFY_PREFIX: &str = "notify";
/// Subject prefix the stream republishes each stored event to (what gateways subscribe to).
pub const LIVE_PREFIX: &str = "live";

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    #[error("is empty")]
    Empty,
    #[error("is longer than {MAX_ID_LEN} characters")]
    TooLong,
    #[error("contains {0:?}; only A-Z, a-z, 0-9, '_' and '-' are allowed")]
    BadChar(char),
}

/// Checks the one-token rule shared by user and device ids.
pub fn validate_token(s: &str) -> Result<(), InvalidId> {
    if s.is_empty() {
        return Err(InvalidId::Empty);
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(InvalidId::BadChar(c));
    }
    if s.len() > MAX_ID_LEN {
        return Err(InvalidId::TooLong);
    }
    Ok(())
}

macro_rules! token_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates `s` against the one-token rule.
            pub fn parse(s: &str) -> Result<Self, InvalidId> {
                validate_token(s)?;
                Ok(Self(s.to_owned()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                Self::parse(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

token_id!(
    /// A validated user id: one NATS subject token.
    UserId
);
token_id!(
    /// A validated device id (same rule as user ids), naming one installation of an app.
    DeviceId
);

impl UserId {
    /// `notify.<userId>`: where producers publish this user's events.
    pub fn notify_subject(&self) -> String {
        format!("{NOTIFY_PREFIX}.{}", self.0)
    }

    /// `live.<userId>`: where the stream republishes this user's stored events.
    pub fn live_subject(&self) -> String {
        format!("{LIVE_PREFIX}.{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in ["42", "farmer_7", "a-b", "Z", &"x".repeat(64)] {
            assert!(UserId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_subject_injection_and_oddities() {
        let cases = [
            ("", InvalidId::Empty),
            ("42.>", InvalidId::BadChar('.')),
            ("*", InvalidId::BadChar('*')),
            (">", InvalidId::BadChar('>')),
            ("a b", InvalidId::BadChar(' ')),
            ("a\tb", InvalidId::BadChar('\t')),
            ("ünï", InvalidId::BadChar('ü')),
            (&"x".repeat(65), InvalidId::TooLong),
        ];
        for (input, want) in cases {
            assert_eq!(UserId::parse(input), Err(want), "{input:?}");
        }
    }

    #[test]
    fn subjects_are_one_token_per_user() {
        let u = UserId::parse("u-1").expect("valid");
        assert_eq!(u.notify_subject(), "notify.u-1");
        assert_eq!(u.live_subject(), "live.u-1");
    }

    #[test]
    fn deserialize_validates() {
        assert!(serde_json::from_str::<UserId>("\"ok_1\"").is_ok());
        assert!(serde_json::from_str::<UserId>("\"no.dots\"").is_err());
    }
}
