//! Signing material: [`Secret`], the one type for every configured key (the
//! JWT secret, the webhook signing secret).

use std::fmt;
use std::str::FromStr;

/// A configured secret. It never shows up in `Debug` output or logs, and it
/// is never empty: an empty key would sign or verify without protecting
/// anything.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The secret's bytes, for keying a MAC or a JWT verifier.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// An empty string where a secret was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a secret must not be empty")]
pub struct EmptySecret;

impl FromStr for Secret {
    type Err = EmptySecret;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        if raw.is_empty() {
            return Err(EmptySecret);
        }
        Ok(Self(raw.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_never_empty() {
        let secret: Secret = "s3cret".parse().expect("non-empty");
        assert_eq!(secret.expose(), b"s3cret");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert_eq!("".parse::<Secret>().err(), Some(EmptySecret));
    }
}
