//! Bearer JWT authentication and per-execution authorization.
//!
//! With a key configured, every API call and socket presents a token; its
//! claims say what it may do (`scope`: `publish`, `subscribe`) and where
//! (`executions`: exact ids, or prefixes ending in `*`; absent means all).
//! Checks happen before anything touches the store, so a 401/403 never
//! reveals whether an execution exists. Without a key, auth is off and every
//! request gets an unrestricted [`Grant`].
//!
//! Token payload example:
//! `{"sub":"worker-7","exp":1767225600,"scope":["publish"],"executions":["ci-1234-*"]}`
//!
//! `exp` is required and `nbf`, when present, is honoured, both with
//! [`LEEWAY_SECS`] of clock skew. `iss` and `aud` are required when an issuer
//! or audience is configured; `aud` may be one string or an array of them
//! (RFC 7519 §4.1.3, as identity providers issue it), and matches when the
//! configured audience is among them.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use exechub_protocol::ErrorCode;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Unix time now, in seconds (the hub's one clock, [`crate::clock::unix_now`]).
pub use crate::clock::unix_now as now;
pub use crate::secret::Secret;

/// Seconds of clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 5;

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Append events.
    Publish,
    /// Read history or receive events.
    Subscribe,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Subscribe => "subscribe",
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No token was presented.
    #[error("a bearer token is required")]
    Missing,
    /// The token is not a JWT at all.
    #[error("the bearer token is malformed")]
    Malformed,
    /// The signature does not match the configured key.
    #[error("the token signature is invalid")]
    BadSignature,
    /// `exp` is in the past.
    #[error("the token has expired")]
    Expired,
    /// Issuer, audience, algorithm or claims are not acceptable.
    #[error("the token is not valid: {0}")]
    Invalid(&'static str),
    /// The token is valid but does not allow this.
    #[error("the token does not allow {0} on this execution")]
    Forbidden(&'static str),
}

impl AuthError {
    /// Machine-readable code for bodies and WebSocket errors.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Missing => ErrorCode::MissingToken,
            Self::Malformed => ErrorCode::MalformedToken,
            Self::BadSignature => ErrorCode::BadSignature,
            Self::Expired => ErrorCode::TokenExpired,
            Self::Invalid(_) => ErrorCode::InvalidToken,
            Self::Forbidden(_) => ErrorCode::Forbidden,
        }
    }

    /// `true` for 403 (valid token, not allowed); `false` for 401.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Self::Forbidden(_))
    }
}

/// The claims exechub reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Who the token was issued to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Expiry, Unix seconds (required).
    pub exp: u64,
    /// Issued at, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not before, Unix seconds: the token is refused until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience, written when minting. Never read back from a presented
    /// token: the verifier checks `aud` there (one string or an array) against
    /// the configured audience, and with none configured any `aud` is fine.
    #[serde(default, skip_serializing_if = "Option::is_none", skip_deserializing)]
    pub aud: Option<String>,
    /// `["publish", "subscribe"]`, or the OAuth form `"publish subscribe"`.
    #[serde(default)]
    pub scope: Scope,
    /// Execution ids or `prefix*` patterns; absent means every execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executions: Option<Vec<String>>,
}

impl Claims {
    /// Claims for a token issued now, valid for `ttl_secs`.
    pub fn issue(
        sub: &str,
        ttl_secs: u64,
        scope: Vec<String>,
        executions: Option<Vec<String>>,
    ) -> Self {
        let now = now();
        Self {
            sub: Some(sub.to_owned()),
            exp: now.saturating_add(ttl_secs),
            iat: Some(now),
            nbf: None,
            iss: None,
            aud: None,
            scope: Scope::List(scope),
            executions,
        }
    }
}

/// A scope claim in either accepted form.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scope {
    /// `["publish", "subscribe"]`.
    List(Vec<String>),
    /// `"publish subscribe"`.
    Spaced(String),
}

impl Default for Scope {
    fn default() -> Self {
        Self::List(Vec::new())
    }
}

impl Scope {
    fn allows(&self, action: Action) -> bool {
        match self {
            Self::List(items) => items.iter().any(|s| s == action.as_str()),
            Self::Spaced(items) => items.split_whitespace().any(|s| s == action.as_str()),
        }
    }
}

/// What an authenticated caller may do.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The token's `sub`, for logs.
    pub subject: std::borrow::Cow<'static, str>,
    /// Unix seconds after which the grant is void (`u64::MAX` when auth is off).
    pub expires_at: u64,
    scope: Option<Scope>,
    executions: Option<Vec<String>>,
}

impl Grant {
    /// Everything, forever: the grant when auth is off.
    pub fn unrestricted() -> Self {
        Self {
            subject: std::borrow::Cow::Borrowed("anonymous"),
            expires_at: u64::MAX,
            scope: None,
            executions: None,
        }
    }

    /// Whether `action` on `execution_id` is allowed.
    ///
    /// # Errors
    /// [`AuthError::Forbidden`] when the scope or the execution grants do not cover it.
    pub fn check(&self, action: Action, execution_id: &str) -> Result<(), AuthError> {
        let scoped = self.scope.as_ref().is_none_or(|scope| scope.allows(action));
        let granted = self.executions.as_ref().is_none_or(|patterns| {
            patterns.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => execution_id.starts_with(prefix),
                None => p == execution_id,
            })
        });
        if scoped && granted {
            Ok(())
        } else {
            Err(AuthError::Forbidden(action.as_str()))
        }
    }
}

/// How tokens are verified.
#[derive(Clone)]
pub struct Auth(Option<Arc<Verifier>>);

struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

/// Failures while setting auth up from configuration.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// The public key file cannot be read.
    #[error("cannot read the JWT public key {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is neither an RSA nor an EC public key in PEM.
    #[error("the JWT public key is not an RSA or EC (P-256) public key in PEM")]
    Key,
    /// The secret cannot be used as an HMAC key.
    #[error("the JWT secret cannot be used (is it empty?)")]
    Secret,
    /// Both a secret and a public key were given.
    #[error("give either --jwt-secret or --jwt-public-key, not both")]
    Both,
}

impl Auth {
    /// Auth off: every request is allowed.
    pub fn off() -> Self {
        Self(None)
    }

    /// Verifies HS256 tokens signed with `secret`.
    ///
    /// # Errors
    /// [`AuthSetupError::Secret`] for an unusable (empty) secret.
    pub fn hs256(
        secret: &Secret,
        issuer: Option<&str>,
        audience: Option<&str>,
    ) -> Result<Self, AuthSetupError> {
        let key = DecodingKey::from_secret(secret.expose()).map_err(|_| AuthSetupError::Secret)?;
        Ok(Self::with(key, Algorithm::HS256, issuer, audience))
    }

    /// Verifies RS256 or ES256 tokens with the PEM public key at `path`.
    ///
    /// # Errors
    /// [`AuthSetupError`] when the file cannot be read or is not a supported key.
    pub fn public_key(
        path: &Path,
        issuer: Option<&str>,
        audience: Option<&str>,
    ) -> Result<Self, AuthSetupError> {
        let pem = std::fs::read(path).map_err(|source| AuthSetupError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let (key, algorithm) = match DecodingKey::from_rsa_pem(&pem) {
            Ok(key) => (key, Algorithm::RS256),
            Err(_) => (
                DecodingKey::from_ec_pem(&pem).map_err(|_| AuthSetupError::Key)?,
                Algorithm::ES256,
            ),
        };
        Ok(Self::with(key, algorithm, issuer, audience))
    }

    fn with(
        key: DecodingKey,
        algorithm: Algorithm,
        issuer: Option<&str>,
        audience: Option<&str>,
    ) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        // A configured issuer or audience is required, not merely checked when present.
        let mut required = vec!["exp"];
        if let Some(issuer) = issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Self(Some(Arc::new(Verifier { key, validation })))
    }

    /// Whether tokens are required.
    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Checks a presented token (or its absence) and returns what it allows.
    ///
    /// # Errors
    /// [`AuthError`] saying why the token is refused (never the token itself).
    pub fn authenticate(&self, token: Option<&str>) -> Result<Grant, AuthError> {
        let Some(verifier) = &self.0 else {
            return Ok(Grant::unrestricted());
        };
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        let data = jsonwebtoken::decode::<Claims>(token, &verifier.key, &verifier.validation)
            .map_err(|e| classify(e.kind()))?;
        let claims = data.claims;
        Ok(Grant {
            subject: claims.sub.unwrap_or_default().into(),
            expires_at: claims.exp,
            scope: Some(claims.scope),
            executions: claims.executions,
        })
    }
}

fn classify(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => AuthError::Malformed,
        ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer"),
        ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience"),
        ErrorKind::InvalidAlgorithm => AuthError::Invalid("wrong algorithm"),
        ErrorKind::MissingRequiredClaim(_) => AuthError::Invalid("a required claim is missing"),
        ErrorKind::InvalidClaimFormat(_) => AuthError::Invalid("a claim has the wrong type"),
        ErrorKind::ImmatureSignature => AuthError::Invalid("not yet valid (nbf is in the future)"),
        _ => AuthError::Invalid("unacceptable token"),
    }
}

/// Signs an HS256 token (the `exechub token` command and the dev token).
///
/// # Errors
/// A message when signing fails.
pub fn mint(secret: &Secret, claims: &Claims) -> Result<String, String> {
    let key = EncodingKey::from_secret(secret.expose()).map_err(|e| e.to_string())?;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).map_err(|e| e.to_string())
}

/// The bearer token of a request: `Authorization: Bearer …`, else `?access_token=…`
/// (for `EventSource` and browser WebSockets, which cannot set headers).
pub fn bearer<'a>(authorization: Option<&'a str>, query: Option<&'a str>) -> Option<&'a str> {
    let from_header = authorization.and_then(|value| {
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    from_header.or_else(|| {
        query?
            .split('&')
            .find_map(|pair| pair.strip_prefix("access_token="))
    })
}

/// Origins allowed to open WebSockets; empty means any.
#[derive(Debug, Clone, Default)]
pub struct Origins(HashSet<String>);

impl Origins {
    /// An allowlist of exact origins such as `https://app.example.com`.
    pub fn new(origins: &[String]) -> Self {
        Self(
            origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_owned())
                .collect(),
        )
    }

    /// Whether a page from `origin` may connect (requests without `Origin`
    /// come from non-browser clients, which origin checks do not concern).
    pub fn allows(&self, origin: Option<&str>) -> bool {
        self.0.is_empty() || origin.is_none_or(|o| self.0.contains(o))
    }

    /// Whether an allowlist is configured.
    pub fn restricted(&self) -> bool {
        !self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        "s3cret".parse().expect("non-empty")
    }

    fn claims(scope: &[&str], executions: Option<&[&str]>, exp: u64) -> Claims {
        Claims {
            sub: Some("t".into()),
            exp,
            iat: None,
            nbf: None,
            iss: None,
            aud: None,
            scope: Scope::List(scope.iter().map(|s| (*s).into()).collect()),
            executions: executions.map(|e| e.iter().map(|s| (*s).into()).collect()),
        }
    }

    #[test]
    fn grants_follow_scope_and_execution_patterns() {
        let auth = Auth::hs256(&secret(), None, None).expect("usable secret");
        let token = mint(
            &secret(),
            &claims(&["subscribe"], Some(&["exec-1*", "other"]), now() + 60),
        )
        .expect("mint");
        let grant = auth.authenticate(Some(&token)).expect("valid");
        assert_eq!(grant.check(Action::Subscribe, "exec-12"), Ok(()));
        assert_eq!(grant.check(Action::Subscribe, "other"), Ok(()));
        assert!(grant.check(Action::Subscribe, "exec-2").is_err());
        assert!(grant.check(Action::Publish, "exec-12").is_err());
    }

    #[test]
    fn refusals_say_why() {
        let auth = Auth::hs256(&secret(), None, None).expect("usable secret");
        let expired = mint(&secret(), &claims(&["publish"], None, now() - 60)).expect("mint");
        let forged = mint(
            &"other".parse().expect("non-empty"),
            &claims(&["publish"], None, now() + 60),
        )
        .expect("mint");
        assert_eq!(auth.authenticate(None).err(), Some(AuthError::Missing));
        assert_eq!(
            auth.authenticate(Some("garbage")).err(),
            Some(AuthError::Malformed)
        );
        assert_eq!(
            auth.authenticate(Some(&expired)).err(),
            Some(AuthError::Expired)
        );
        assert_eq!(
            auth.authenticate(Some(&forged)).err(),
            Some(AuthError::BadSignature)
        );
        assert!(Auth::off().authenticate(None).is_ok());
    }

    /// Signs arbitrary claims, for shapes [`Claims`] does not write.
    fn mint_json(claims: &serde_json::Value) -> String {
        let key = EncodingKey::from_secret(secret().expose()).expect("HMAC key");
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).expect("mint")
    }

    fn with_aud(aud: Option<serde_json::Value>) -> String {
        let mut claims = serde_json::json!({ "exp": now() + 60, "scope": ["publish"] });
        if let Some(aud) = aud {
            claims["aud"] = aud;
        }
        mint_json(&claims)
    }

    #[test]
    fn audience_is_a_string_or_an_array_containing_the_configured_one() {
        use serde_json::json;
        let auth = Auth::hs256(&secret(), None, Some("hub")).expect("usable secret");
        let verdict = |aud| auth.authenticate(Some(&with_aud(aud))).err();
        assert_eq!(verdict(Some(json!("hub"))), None);
        assert_eq!(verdict(Some(json!(["api", "hub"]))), None);
        let wrong = Some(AuthError::Invalid("wrong audience"));
        assert_eq!(verdict(Some(json!("api"))), wrong);
        assert_eq!(verdict(Some(json!(["api", "web"]))), wrong);
        assert_eq!(
            verdict(None),
            Some(AuthError::Invalid("a required claim is missing"))
        );
        // Without a configured audience, whatever `aud` says is fine.
        let open = Auth::hs256(&secret(), None, None).expect("usable secret");
        for aud in [json!("api"), json!(["api", "web"]), json!([])] {
            assert!(open.authenticate(Some(&with_aud(Some(aud)))).is_ok());
        }
    }

    #[test]
    fn nbf_is_honoured_with_the_same_leeway_as_exp() {
        let auth = Auth::hs256(&secret(), None, None).expect("usable secret");
        let starting = |nbf: u64| {
            let claims = Claims {
                nbf: Some(nbf),
                ..claims(&["publish"], None, now() + 600)
            };
            auth.authenticate(Some(&mint(&secret(), &claims).expect("mint")))
        };
        assert!(starting(now() - 60).is_ok());
        assert!(
            starting(now() + LEEWAY_SECS - 2).is_ok(),
            "within the leeway"
        );
        let early = starting(now() + 60).expect_err("not yet valid");
        assert_eq!(early.code(), ErrorCode::InvalidToken);
        assert!(early.to_string().contains("not yet valid"), "{early}");
    }

    #[test]
    fn a_configured_issuer_is_required() {
        let auth = Auth::hs256(&secret(), Some("idp"), None).expect("usable secret");
        let token = |iss: Option<&str>| {
            let claims = Claims {
                iss: iss.map(str::to_owned),
                ..claims(&["publish"], None, now() + 60)
            };
            mint(&secret(), &claims).expect("mint")
        };
        assert!(auth.authenticate(Some(&token(Some("idp")))).is_ok());
        assert_eq!(
            auth.authenticate(Some(&token(Some("other")))).err(),
            Some(AuthError::Invalid("wrong issuer"))
        );
        assert_eq!(
            auth.authenticate(Some(&token(None))).err(),
            Some(AuthError::Invalid("a required claim is missing"))
        );
    }

    #[test]
    fn bearer_comes_from_the_header_or_the_query() {
        assert_eq!(bearer(Some("Bearer abc"), None), Some("abc"));
        assert_eq!(bearer(None, Some("after=1&access_token=xyz")), Some("xyz"));
        assert_eq!(bearer(Some("Basic abc"), None), None);
        assert!(format!("{:?}", secret()).contains("redacted"));
    }
}
