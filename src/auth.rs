//! Identity: HS256 JWTs with `sub`, `role`, optional `name`, and a required `exp`.
//!
//! One [`Keys`] value decodes tokens from every place a client may put them: the HTTP
//! `Authorization` header, a graphql-ws `connection_init` payload, or `/ws?token=`. The algorithm is
//! pinned to HS256 so that a token signed any other way (`none` included) is invalid.

use std::fmt;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};

/// Seconds of clock skew tolerated on `exp` and `nbf` (the contract's figure, `docs/contract.md`).
pub const LEEWAY_SECS: u64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, async_graphql::Enum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Staff,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Staff => "staff",
            Role::Admin => "admin",
        }
    }
}

/// A signed-in user, as the token describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub role: Role,
    pub name: Option<String>,
    /// When the token stops being valid (its `exp`, without leeway).
    pub expires_at: DateTime<Utc>,
}

impl User {
    /// Staff and admins see every order; customers their own.
    pub fn is_staff(&self) -> bool {
        matches!(self.role, Role::Staff | Role::Admin)
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    pub fn may_see_customer(&self, customer_id: &str) -> bool {
        self.is_staff() || self.id == customer_id
    }

    /// When a live connection of this user must end: the token's `exp` plus the leeway, as a
    /// timer deadline (sockets outlive the check made when they opened).
    pub fn expiry_deadline(&self) -> tokio::time::Instant {
        let remaining = (self.expires_at - Utc::now()).num_milliseconds() + (LEEWAY_SECS as i64) * 1000;
        tokio::time::Instant::now() + std::time::Duration::from_millis(remaining.max(0) as u64)
    }
}

/// Who is asking: nobody, or a user.
pub type Viewer = Option<User>;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
}

/// Why a token was refused. The message is safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// The signing key and the rules a token must meet.
#[derive(Clone)]
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: Option<String>,
    audience: Option<String>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys").field("issuer", &self.issuer).field("audience", &self.audience).finish()
    }
}

impl Keys {
    pub fn new(secret: &[u8], issuer: Option<String>, audience: Option<String>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // jsonwebtoken checks `iss`/`aud` only when the token has them: a token that leaves them
        // out would pass, so a configured one is also a required one.
        let mut required = vec!["exp", "sub"];
        required.extend(issuer.as_ref().map(|_| "iss"));
        required.extend(audience.as_ref().map(|_| "aud"));
        validation.set_required_spec_claims(&required);
        match &issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &audience {
            Some(aud) => validation.set_audience(&[aud]),
            // Without a configured audience, a token's `aud` is not ours to judge.
            None => validation.validate_aud = false,
        }
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer,
            audience,
        }
    }

    /// Decodes and validates a token; a `Bearer ` prefix is accepted and ignored.
    pub fn verify(&self, token: &str) -> Result<User, AuthError> {
        let token = strip_bearer(token);
        let data = decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::Invalid("token not valid yet".into()),
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                ErrorKind::InvalidAlgorithm => AuthError::Invalid("algorithm must be HS256".into()),
                ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer".into()),
                ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience".into()),
                ErrorKind::MissingRequiredClaim(claim) => AuthError::Invalid(format!("missing claim {claim}")),
                _ => AuthError::Invalid("malformed token".into()),
            }
        })?;
        let claims = data.claims;
        if claims.sub.is_empty() {
            return Err(AuthError::Invalid("empty sub".into()));
        }
        // Exactly as written, lowercase: a token is signed data, and a role spelled another way
        // (`ADMIN`, `Admin`) was minted by something that does not follow the contract, so it
        // grants nothing rather than whatever a case-insensitive match would guess.
        let role = match claims.role.as_deref() {
            None | Some("customer") => Role::Customer,
            Some("staff") => Role::Staff,
            Some("admin") => Role::Admin,
            Some(other) => return Err(AuthError::Invalid(format!("unknown role {other:?}"))),
        };
        let expires_at = DateTime::from_timestamp(i64::try_from(claims.exp).unwrap_or(i64::MAX), 0)
            .ok_or_else(|| AuthError::Invalid("exp out of range".into()))?;
        Ok(User { id: claims.sub, role, name: claims.name, expires_at })
    }

    /// Signs a token for `sub` valid for `ttl_secs`.
    pub fn sign(&self, sub: &str, role: Role, name: Option<&str>, ttl_secs: u64) -> String {
        let now = Utc::now().timestamp().max(0) as u64;
        let claims = Claims {
            sub: sub.to_owned(),
            role: Some(role.as_str().to_owned()),
            name: name.map(str::to_owned),
            exp: now + ttl_secs,
            iat: Some(now),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).expect("HS256 signing cannot fail")
    }
}

/// `"Bearer abc"` → `"abc"`; anything else is returned trimmed.
pub fn strip_bearer(value: &str) -> &str {
    let value = value.trim();
    match value.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("bearer ") => value[7..].trim(),
        _ => value,
    }
}

/// The token in a graphql-ws `connection_init` payload, under any of the names clients use.
pub fn token_in_params(params: &serde_json::Value) -> Option<&str> {
    ["authorization", "Authorization", "authToken", "token"]
        .iter()
        .filter_map(|key| params.get(key)?.as_str())
        .map(str::trim)
        .find(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new(b"secret", None, None)
    }

    #[test]
    fn round_trip_keeps_role_and_name() {
        let keys = keys();
        let user = keys.verify(&keys.sign("u1", Role::Staff, Some("Ann"), 60)).unwrap();
        assert_eq!((user.id.as_str(), user.role, user.name.as_deref()), ("u1", Role::Staff, Some("Ann")));
    }

    #[test]
    fn bearer_prefix_is_optional() {
        let keys = keys();
        let token = keys.sign("u1", Role::Customer, None, 60);
        assert!(keys.verify(&format!("Bearer {token}")).is_ok());
        assert!(keys.verify(&format!("bearer  {token}")).is_ok());
    }

    #[test]
    fn other_key_and_other_algorithm_are_refused() {
        let token = Keys::new(b"other", None, None).sign("u1", Role::Admin, None, 60);
        assert!(matches!(keys().verify(&token), Err(AuthError::Invalid(_))));
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &serde_json::json!({"sub": "u1", "exp": 4_000_000_000u64}),
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert!(matches!(keys().verify(&hs512), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn expiry_honours_the_leeway() {
        let keys = keys();
        let now = Utc::now().timestamp() as u64;
        let sign = |exp: u64| {
            encode(
                &Header::new(Algorithm::HS256),
                &serde_json::json!({"sub": "u1", "exp": exp}),
                &EncodingKey::from_secret(b"secret"),
            )
            .unwrap()
        };
        assert!(keys.verify(&sign(now - 10)).is_ok(), "within 30 s leeway");
        assert_eq!(keys.verify(&sign(now - 120)), Err(AuthError::Expired));
    }

    #[test]
    fn missing_exp_and_string_exp_are_refused() {
        let no_exp =
            encode(&Header::default(), &serde_json::json!({"sub": "u1"}), &EncodingKey::from_secret(b"secret"))
                .unwrap();
        assert!(keys().verify(&no_exp).is_err());
        let string_exp = encode(
            &Header::default(),
            &serde_json::json!({"sub": "u1", "exp": "4000000000"}),
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert!(keys().verify(&string_exp).is_err());
    }

    #[test]
    fn issuer_and_audience_are_enforced_when_configured() {
        let strict = Keys::new(b"secret", Some("shop".into()), Some("web".into()));
        assert!(strict.verify(&strict.sign("u1", Role::Customer, None, 60)).is_ok());
        assert!(strict.verify(&keys().sign("u1", Role::Customer, None, 60)).is_err());
    }

    #[test]
    fn unknown_role_is_refused() {
        let token = encode(
            &Header::default(),
            &serde_json::json!({"sub": "u1", "role": "root", "exp": 4_000_000_000u64}),
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert!(keys().verify(&token).is_err());
    }

    #[test]
    fn roles_match_exactly_in_lowercase() {
        let with_role = |role: &str| {
            encode(
                &Header::default(),
                &serde_json::json!({"sub": "u1", "role": role, "exp": 4_000_000_000u64}),
                &EncodingKey::from_secret(b"secret"),
            )
            .unwrap()
        };
        assert_eq!(keys().verify(&with_role("admin")).map(|u| u.role), Ok(Role::Admin));
        for spelled in ["ADMIN", "Admin", "Staff", "CUSTOMER", " admin"] {
            assert!(
                matches!(keys().verify(&with_role(spelled)), Err(AuthError::Invalid(_))),
                "{spelled:?} must be refused"
            );
        }
    }
}
