//! Bearer tokens through `exechub::auth::Auth::authenticate`: arbitrary
//! token strings (`jwt_token`), and arbitrary claims signed with the right
//! key (`jwt_claims`), which get past the signature to the claim checks.
//! Either way the answer is a grant or a typed refusal, never a panic; and a
//! grant is only ever given to claims that satisfy what the hub requires.

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use exechub::auth::{Action, Auth, LEEWAY_SECS, Secret, now};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// The key the seed tokens in `corpus/jwt_token` are signed with.
const SECRET: &str = "exechub-fuzz-secret";
/// What the strict verifier requires as `iss` and `aud`.
const ISSUER: &str = "fuzz-issuer";
const AUDIENCE: &str = "exechub";

/// Pieces of tokens.
pub const TOKEN_WORDS: &[&str] = &[
    ".",
    "..",
    "eyJ",
    "eyJhbGciOiJub25lIn0",
    "eyJhbGciOiJIUzI1NiJ9",
    "=",
    "-",
    "_",
    "+",
    "/",
    "%",
    " ",
    "Bearer ",
];

/// Claim names and values.
pub const CLAIM_WORDS: &[&str] = &[
    "\"exp\"",
    "\"nbf\"",
    "\"iat\"",
    "\"aud\"",
    "\"iss\"",
    "\"sub\"",
    "\"scope\"",
    "\"executions\"",
    "\"publish\"",
    "\"subscribe\"",
    "\"publish subscribe\"",
    "\"exechub\"",
    "\"fuzz-issuer\"",
    "\"ci-*\"",
    "\"*\"",
    "4102444800",
    "exp",
    "aud",
    "nbf",
];

/// The claims a grant depends on, read the way the hub reads claims (other
/// fields are skipped unchecked, as serde skips them for the hub: a token
/// may be granted with a claim exechub ignores that is not even valid JSON,
/// e.g. `1e309` or invalid UTF-8 in a string).
#[derive(Deserialize)]
struct Promised {
    exp: u64,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    iss: Option<String>,
}

/// `aud`, as the verifier accepts it when an audience is configured.
#[derive(Deserialize)]
struct Addressed {
    aud: Audience,
}

/// One audience or several (RFC 7519 §4.1.3).
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Without and with a required issuer and audience.
fn verifiers() -> &'static [Auth; 2] {
    static VERIFIERS: OnceLock<[Auth; 2]> = OnceLock::new();
    VERIFIERS.get_or_init(|| {
        let secret: Secret = SECRET.parse().expect("not empty");
        let plain = Auth::hs256(&secret, None, None).expect("usable secret");
        let strict = Auth::hs256(&secret, Some(ISSUER), Some(AUDIENCE)).expect("usable secret");
        [plain, strict]
    })
}

/// `input` as a bearer token.
pub fn jwt_token(input: &[u8]) -> String {
    let token = String::from_utf8_lossy(input);
    let labels: Vec<String> = verifiers()
        .iter()
        .map(|auth| match auth.authenticate(Some(&token)) {
            Ok(grant) => format!("ok:{}", grant.check(Action::Publish, "ci-1").is_ok()),
            Err(refusal) => refusal.code().as_str().to_owned(),
        })
        .collect();
    labels.join("|")
}

/// `input` as the claims of a token signed with the right key.
pub fn jwt_claims(input: &[u8]) -> String {
    let token = sign(input);
    let labels: Vec<String> = verifiers()
        .iter()
        .enumerate()
        .map(|(strict, auth)| match auth.authenticate(Some(&token)) {
            Ok(grant) => {
                let exp = assert_acceptable(input, strict == 1);
                assert_eq!(grant.expires_at, exp, "the grant's expiry is not exp");
                format!("ok:{}", grant.check(Action::Subscribe, "ci-1").is_ok())
            }
            Err(refusal) => refusal.to_string(),
        })
        .collect();
    labels.join("|")
}

/// What the hub promises of every claim set it grants on; returns `exp`.
fn assert_acceptable(claims: &[u8], strict: bool) -> u64 {
    let promised: Promised = serde_json::from_slice(claims).expect("a grant without a u64 exp");
    let now = now();
    let exp = promised.exp;
    assert!(
        exp.saturating_add(LEEWAY_SECS) >= now,
        "a grant on a token expired at {exp}"
    );
    if let Some(nbf) = promised.nbf {
        assert!(nbf <= now + LEEWAY_SECS + 1, "a grant before nbf {nbf}");
    }
    if strict {
        assert_eq!(
            promised.iss.as_deref(),
            Some(ISSUER),
            "a grant for another issuer"
        );
        let addressed: Addressed = serde_json::from_slice(claims).expect("a grant without aud");
        let ours = match addressed.aud {
            Audience::One(aud) => aud == AUDIENCE,
            Audience::Many(all) => all.iter().any(|aud| aud == AUDIENCE),
        };
        assert!(ours, "a grant for another audience");
    }
    exp
}

/// An HS256 JWT with `payload` as its (raw) claims.
fn sign(payload: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let signing_input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(payload));
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_claims_are_accepted_and_checked() {
        let good =
            br#"{"exp":4102444800,"scope":["publish"],"iss":"fuzz-issuer","aud":["x","exechub"]}"#;
        assert_eq!(jwt_claims(good), "ok:false|ok:false");
        assert!(jwt_claims(br#"{"exp":1}"#).contains("expired"));
        assert!(jwt_token(sign(good).as_bytes()).starts_with("ok:true|ok:true"));
    }
}
