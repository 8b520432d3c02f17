//! HS256 JWT verification (docs/PROTOCOL.md#security). Claims: `exp` (required), `sub` (the user id, required)
//! and `sessions` (required: an array of session slugs, or the string `"*"` for service
//! tokens that may touch every session); `role` (optional: `viewer`, `host` or `service`,
//! docs/PROTOCOL.md#roles; absent means `viewer`).

use std::collections::HashSet;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use ::actors::access::{Role, SessionAccess};

use super::error::AuthError;
use super::principal::Principal;

/// Seconds a token stays accepted past its `exp`, for clock skew between the service that mints
/// tokens and this one. Small: an expired token should stop working promptly.
pub const CLOCK_SKEW_LEEWAY_SECS: u64 = 30;

/// The claims a token carries. Public so that tools and tests mint tokens with the same shape
/// (`jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    pub sessions: SessionsClaim,
    /// `viewer`, `host` or `service`; absent means `viewer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// `"sessions": ["weekly-sync", …]` or `"sessions": "*"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SessionsClaim {
    /// Must be exactly `"*"`; any other string is refused as malformed.
    All(String),
    Only(Vec<String>),
}

impl SessionsClaim {
    /// The service-token form, `"*"`.
    pub fn all() -> SessionsClaim {
        SessionsClaim::All("*".to_owned())
    }
}

/// What this module reads from the payload. Loose types on purpose: a claim of the wrong type
/// is reported as "malformed: <claim>" by us rather than as a generic JSON error.
#[derive(Deserialize)]
struct PayloadClaims {
    sub: Option<serde_json::Value>,
    exp: Option<serde_json::Value>,
    sessions: Option<serde_json::Value>,
    role: Option<serde_json::Value>,
}

/// Verifies tokens signed with one shared secret.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl TokenVerifier {
    pub fn new(secret: &[u8]) -> TokenVerifier {
        // Only HS256: a token whose header names another algorithm (including "none") is
        // refused before its signature is looked at, so an attacker cannot pick the algorithm.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = CLOCK_SKEW_LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // We define no audience; without this a token that carries `aud` would be refused.
        validation.validate_aud = false;
        TokenVerifier {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Checks shape, algorithm, signature, then `exp`/`nbf`, then our claims.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        let data = jsonwebtoken::decode::<PayloadClaims>(token, &self.key, &self.validation)
            .map_err(|e| classify(e.kind()))?;
        let user_id = match data.claims.sub {
            Some(serde_json::Value::String(sub)) if !sub.is_empty() => sub,
            _ => return Err(AuthError::Malformed("`sub` must be a non-empty string")),
        };
        let access = match data.claims.sessions {
            Some(value) => access_from_claim(value)?,
            None => return Err(AuthError::Malformed("the `sessions` claim is missing")),
        };
        // jsonwebtoken has checked that `exp` is there and not past (within the leeway).
        let expires_at = data
            .claims
            .exp
            .as_ref()
            .and_then(serde_json::Value::as_u64)
            .ok_or(AuthError::Malformed(
                "`exp` must be a number of seconds since the epoch",
            ))?;
        let role = match data.claims.role {
            None | Some(serde_json::Value::Null) => Role::Viewer,
            Some(serde_json::Value::String(name)) => Role::from_name(&name).ok_or(
                AuthError::Malformed("`role` must be \"viewer\", \"host\" or \"service\""),
            )?,
            Some(_) => {
                return Err(AuthError::Malformed(
                    "`role` must be \"viewer\", \"host\" or \"service\"",
                ))
            }
        };
        Ok(Principal {
            user_id: Some(user_id),
            access,
            role,
            expires_at: Some(expires_at),
        })
    }
}

fn access_from_claim(value: serde_json::Value) -> Result<SessionAccess, AuthError> {
    const SHAPE: &str = "`sessions` must be an array of session slugs or \"*\"";
    match value {
        serde_json::Value::String(s) if s == "*" => Ok(SessionAccess::Any),
        serde_json::Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                serde_json::Value::String(slug) => Ok(slug),
                _ => Err(AuthError::Malformed(SHAPE)),
            })
            .collect::<Result<HashSet<String>, _>>()
            .map(SessionAccess::Only),
        _ => Err(AuthError::Malformed(SHAPE)),
    }
}

/// jsonwebtoken's error kinds, folded into the few a caller can act on.
fn classify(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::Malformed("the token is not valid yet (`nbf`)"),
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm => {
            AuthError::Malformed("the token must be signed with HS256")
        }
        ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => {
            AuthError::Malformed("the `exp` claim is missing")
        }
        ErrorKind::MissingRequiredClaim(claim) if claim == "sub" => {
            AuthError::Malformed("`sub` must be a non-empty string")
        }
        ErrorKind::InvalidClaimFormat(claim) if claim == "exp" => {
            AuthError::Malformed("`exp` must be a number of seconds since the epoch")
        }
        // Bad base64, bad JSON, wrong number of segments, another claim we do not read.
        _ => AuthError::Malformed("not a JWT"),
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const SECRET: &[u8] = b"unit-test-secret";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn sign(payload: &serde_json::Value) -> String {
        sign_with(Header::new(Algorithm::HS256), payload, SECRET)
    }

    fn sign_with(header: Header, payload: &serde_json::Value, secret: &[u8]) -> String {
        encode(&header, payload, &EncodingKey::from_secret(secret)).expect("encode")
    }

    fn verifier() -> TokenVerifier {
        TokenVerifier::new(SECRET)
    }

    #[test]
    fn valid_token_lists_its_sessions() {
        let token = sign(&json!({"sub": "user-17", "exp": now() + 600, "sessions": ["a", "b.c"]}));
        let principal = verifier().verify(&token).expect("valid");
        assert_eq!(principal.user_id.as_deref(), Some("user-17"));
        assert!(principal.access.allows("a") && principal.access.allows("b.c"));
        assert!(!principal.access.allows("other"));
        assert_eq!(
            principal.require_session("other"),
            Err(AuthError::NotValidForSession("other".into()))
        );
    }

    #[test]
    fn star_is_a_service_token_and_other_strings_are_not() {
        let token = sign(&json!({"sub": "svc", "exp": now() + 600, "sessions": "*"}));
        assert_eq!(
            verifier().verify(&token).unwrap().access,
            SessionAccess::Any
        );

        let token = sign(&json!({"sub": "svc", "exp": now() + 600, "sessions": "weekly"}));
        assert!(matches!(
            verifier().verify(&token),
            Err(AuthError::Malformed(_))
        ));
        let token = sign(&json!({"sub": "svc", "exp": now() + 600, "sessions": [1, 2]}));
        assert!(matches!(
            verifier().verify(&token),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn the_claims_struct_mints_tokens_the_verifier_accepts() {
        let claims = Claims {
            sub: "svc".into(),
            exp: now() + 60,
            sessions: SessionsClaim::all(),
            role: Some("service".into()),
        };
        let token = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        let principal = verifier().verify(&token).unwrap();
        assert_eq!(principal.access, SessionAccess::Any);
        assert_eq!(principal.role, Role::Service);
    }

    #[test]
    fn role_defaults_to_viewer_and_unknown_roles_are_malformed() {
        let role_of = |role: serde_json::Value| {
            let mut claims = json!({"sub": "u", "exp": now() + 600, "sessions": ["a"]});
            if !role.is_null() {
                claims["role"] = role;
            }
            verifier().verify(&sign(&claims)).map(|p| p.role)
        };
        assert_eq!(role_of(serde_json::Value::Null), Ok(Role::Viewer));
        assert_eq!(role_of(json!("viewer")), Ok(Role::Viewer));
        assert_eq!(role_of(json!("host")), Ok(Role::Host));
        assert_eq!(role_of(json!("service")), Ok(Role::Service));
        for bad in [
            json!("admin"),
            json!("HOST"),
            json!(""),
            json!(2),
            json!(["host"]),
        ] {
            assert!(
                matches!(role_of(bad.clone()), Err(AuthError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn expired_token_is_refused_beyond_the_leeway() {
        let token =
            sign(&json!({"sub": "u", "exp": now() - CLOCK_SKEW_LEEWAY_SECS - 5, "sessions": "*"}));
        assert_eq!(verifier().verify(&token), Err(AuthError::Expired));
    }

    #[test]
    fn wrong_secret_is_a_bad_signature() {
        let token = sign_with(
            Header::new(Algorithm::HS256),
            &json!({"sub": "u", "exp": now() + 600, "sessions": "*"}),
            b"another-secret",
        );
        assert_eq!(verifier().verify(&token), Err(AuthError::BadSignature));
    }

    #[test]
    fn tampered_payload_is_a_bad_signature() {
        let token = sign(&json!({"sub": "u", "exp": now() + 600, "sessions": ["mine"]}));
        let parts: Vec<&str> = token.split('.').collect();
        use base64::Engine as _;
        let forged_payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(json!({"sub": "u", "exp": now() + 600, "sessions": "*"}).to_string());
        let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(verifier().verify(&forged), Err(AuthError::BadSignature));
    }

    #[test]
    fn other_algorithms_are_refused() {
        let payload = json!({"sub": "u", "exp": now() + 600, "sessions": "*"});
        // Same secret, another HMAC: still refused, the algorithm is not the caller's choice.
        let hs512 = sign_with(Header::new(Algorithm::HS512), &payload, SECRET);
        assert_eq!(
            verifier().verify(&hs512),
            Err(AuthError::Malformed("the token must be signed with HS256"))
        );
        // alg "none" with an empty signature.
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let unsigned = format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(payload.to_string())
        );
        assert!(matches!(
            verifier().verify(&unsigned),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn missing_claims_are_malformed() {
        for payload in [
            json!({"sub": "u", "sessions": "*"}),
            json!({"exp": now() + 600, "sessions": "*"}),
            json!({"sub": "", "exp": now() + 600, "sessions": "*"}),
            json!({"sub": 17, "exp": now() + 600, "sessions": "*"}),
            json!({"sub": "u", "exp": now() + 600}),
            json!({"sub": "u", "exp": "tomorrow", "sessions": "*"}),
        ] {
            let result = verifier().verify(&sign(&payload));
            assert!(
                matches!(result, Err(AuthError::Malformed(_))),
                "{payload}: {result:?}"
            );
        }
    }

    #[test]
    fn junk_is_malformed_and_empty_is_missing() {
        for junk in ["abc", "a.b.c", "a.b", "....", "Bearer x"] {
            assert!(
                matches!(verifier().verify(junk), Err(AuthError::Malformed(_))),
                "{junk}"
            );
        }
        assert_eq!(verifier().verify("  "), Err(AuthError::MissingToken));
    }

    #[test]
    fn errors_never_contain_the_token() {
        let token = sign_with(
            Header::new(Algorithm::HS256),
            &json!({"sub": "u", "exp": now() + 600, "sessions": "*"}),
            b"wrong",
        );
        let error = verifier().verify(&token).unwrap_err();
        assert!(!error.to_string().contains(&token));
        assert!(!format!("{error:?}").contains(&token));
    }
}
