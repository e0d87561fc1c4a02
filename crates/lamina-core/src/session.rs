//! Temporary credentials for a function's execution role, as Lambda hands them to every
//! execution environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`).
//!
//! Nothing is stored: the session token carries the role, the session's name and its expiry,
//! sealed with an HMAC of the server's key, and the secret key is derived from the access key
//! id and the same key. A server verifies a request signed with such credentials by opening
//! the token, which gives it the secret to check the signature against and the identity the
//! request is made as.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// What every token starts with: its format's version.
const TOKEN_PREFIX: &str = "LAMINA1.";
/// Temporary access key ids start as AWS's do.
const ACCESS_KEY_PREFIX: &str = "ASIA";

/// The key that seals session tokens and derives their secrets.
#[derive(Clone)]
pub struct SessionKey(Vec<u8>);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

/// A set of temporary credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// Epoch seconds.
    pub expires_s: i64,
}

/// Who a session token says its holder is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    #[serde(rename = "k")]
    pub access_key_id: String,
    /// The role assumed (the function's `Role`).
    #[serde(rename = "r")]
    pub role_arn: String,
    /// The role session's name (the function's name).
    #[serde(rename = "s")]
    pub session_name: String,
    /// Epoch seconds.
    #[serde(rename = "e")]
    pub expires_s: i64,
}

impl Session {
    /// `arn:aws:sts::<account>:assumed-role/<role name>/<session>`, the caller's identity.
    pub fn assumed_role_arn(&self, account_id: &str) -> String {
        let role_name = self.role_arn.rsplit('/').next().unwrap_or(&self.role_arn);
        format!(
            "arn:aws:sts::{account_id}:assumed-role/{role_name}/{}",
            self.session_name
        )
    }

    /// `AROA…:<session>`: the role's unique id (stable for the role's ARN) and the session.
    pub fn user_id(&self) -> String {
        let digest = Sha256::digest(self.role_arn.as_bytes());
        format!(
            "AROA{}:{}",
            upper_alphanumeric(&digest, 17),
            self.session_name
        )
    }
}

/// Why a session token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// not a token this server issued, or not for this access key
    #[error("the security token included in the request is invalid")]
    Invalid,
    /// the token's session is over
    #[error("the security token included in the request is expired")]
    Expired,
}

impl SessionKey {
    pub fn new(key: Vec<u8>) -> Self {
        Self(key)
    }

    fn mac(&self, purpose: &[u8], data: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key");
        mac.update(purpose);
        mac.update(b"\0");
        mac.update(data);
        mac
    }

    fn secret_of(&self, access_key_id: &str, expires_s: i64) -> String {
        let data = format!("{access_key_id}\0{expires_s}");
        let tag = self.mac(b"secret", data.as_bytes()).finalize().into_bytes();
        base64::engine::general_purpose::STANDARD.encode(tag)[..40].to_owned()
    }

    /// Credentials for `session_name` in `role_arn`, valid from `now_s` for `lifetime_s`;
    /// `random` makes the access key id unique.
    pub fn issue(
        &self,
        role_arn: &str,
        session_name: &str,
        now_s: i64,
        lifetime_s: i64,
        random: [u8; 16],
    ) -> Credentials {
        let access_key_id = format!("{ACCESS_KEY_PREFIX}{}", upper_alphanumeric(&random, 16));
        let session = Session {
            access_key_id: access_key_id.clone(),
            role_arn: role_arn.to_owned(),
            session_name: session_name.to_owned(),
            expires_s: now_s + lifetime_s,
        };
        let payload = serde_json::to_vec(&session).expect("a session serializes");
        let tag = self.mac(b"token", &payload).finalize().into_bytes();
        Credentials {
            secret_access_key: self.secret_of(&access_key_id, session.expires_s),
            access_key_id,
            session_token: format!(
                "{TOKEN_PREFIX}{}.{}",
                URL_SAFE_NO_PAD.encode(&payload),
                URL_SAFE_NO_PAD.encode(tag)
            ),
            expires_s: session.expires_s,
        }
    }

    /// Opens `token`, presented with `access_key_id` at `now_s`: the session it names and the
    /// secret key the request must be signed with.
    pub fn open(
        &self,
        access_key_id: &str,
        token: &str,
        now_s: i64,
    ) -> Result<(Session, String), TokenError> {
        let sealed = token
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(TokenError::Invalid)?;
        let (payload, tag) = sealed.split_once('.').ok_or(TokenError::Invalid)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Invalid)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Invalid)?;
        self.mac(b"token", &payload)
            .verify_slice(&tag)
            .map_err(|_| TokenError::Invalid)?;
        let session: Session = serde_json::from_slice(&payload).map_err(|_| TokenError::Invalid)?;
        if session.access_key_id != access_key_id {
            return Err(TokenError::Invalid);
        }
        if now_s >= session.expires_s {
            return Err(TokenError::Expired);
        }
        let secret = self.secret_of(access_key_id, session.expires_s);
        Ok((session, secret))
    }
}

/// `len` characters of `[A-Z2-7]` (base32's alphabet) from `bytes`.
fn upper_alphanumeric(bytes: &[u8], len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits = bytes
        .iter()
        .flat_map(|byte| (0..8).rev().map(move |i| (byte >> i) & 1));
    (0..len)
        .map(|_| {
            let index = (0..5).fold(0usize, |n, _| {
                (n << 1) | usize::from(bits.next().unwrap_or(0))
            });
            char::from(ALPHABET[index])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLE: &str = "arn:aws:iam::000000000000:role/service/lambda-role";

    #[test]
    fn issued_credentials_open_to_their_session_until_they_expire() {
        let key = SessionKey::new(b"server key".to_vec());
        let issued = key.issue(ROLE, "my-function", 1_000, 3_600, [7; 16]);
        assert!(issued.access_key_id.starts_with("ASIA") && issued.access_key_id.len() == 20);
        assert_eq!(issued.expires_s, 4_600);
        let (session, secret) = key
            .open(&issued.access_key_id, &issued.session_token, 4_599)
            .unwrap();
        assert_eq!(secret, issued.secret_access_key);
        assert_eq!(
            session.assumed_role_arn("000000000000"),
            "arn:aws:sts::000000000000:assumed-role/lambda-role/my-function"
        );
        assert!(
            session.user_id().starts_with("AROA") && session.user_id().ends_with(":my-function")
        );
        assert_eq!(
            key.open(&issued.access_key_id, &issued.session_token, 4_600),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn forged_or_misused_tokens_are_invalid() {
        let key = SessionKey::new(b"server key".to_vec());
        let issued = key.issue(ROLE, "f", 0, 60, [1; 16]);
        let other = key.issue(ROLE, "g", 0, 60, [2; 16]);
        let open = |id: &str, token: &str| key.open(id, token, 1).map(|(s, _)| s.session_name);
        assert_eq!(
            open(&issued.access_key_id, &other.session_token),
            Err(TokenError::Invalid),
            "a token is bound to its access key"
        );
        let mut forged = issued.session_token.clone();
        forged.replace_range(12..13, if &forged[12..13] == "A" { "B" } else { "A" });
        assert_eq!(
            open(&issued.access_key_id, &forged),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            open(&issued.access_key_id, "garbage"),
            Err(TokenError::Invalid)
        );
        let stranger = SessionKey::new(b"another server".to_vec());
        assert_eq!(
            stranger
                .open(&issued.access_key_id, &issued.session_token, 1)
                .err(),
            Some(TokenError::Invalid)
        );
    }
}
