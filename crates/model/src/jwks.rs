//! JSON Web Key Sets as verification keys: which keys of a set a proxy can verify tokens with
//! (RSA, EC P-256 / P-384, Ed25519 signing keys, read by `jsonwebtoken`), and why a set has
//! none. One parser for every side: `weft check` and the control plane refuse an inline `jwks`
//! the proxy could not use, and the proxy verifies tokens with the keys it returns.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Why a JWKS document gives no verification key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Not JSON at all (serde_json's message).
    NotJson(String),
    /// JSON, but without a `keys` array.
    NoKeysList,
    /// A `keys` array without one usable signing key; why each key was skipped.
    NoUsableKey(Vec<String>),
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::NotJson(e) => write!(f, "the JWKS is not JSON: {e}"),
            Invalid::NoKeysList => f.write_str("the JWKS has no `keys` list"),
            Invalid::NoUsableKey(skipped) => {
                f.write_str("the JWKS has no usable signing key (RSA, EC P-256/P-384 or Ed25519)")?;
                if !skipped.is_empty() {
                    write!(f, ": {}", skipped.join("; "))?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Invalid {}

/// The signature family a key belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Rsa,
    /// An EC key, with the one algorithm its curve signs with.
    Ec(Algorithm),
    Ed,
}

/// One verification key of a set.
pub struct Key {
    pub kid: Option<String>,
    /// The `alg` the JWK pins, if any.
    pub alg: Option<Algorithm>,
    pub kind: Kind,
    pub decoding: DecodingKey,
}

impl Key {
    /// Whether a token signed with `alg` may be checked with this key.
    pub fn fits(&self, alg: Algorithm) -> bool {
        let family = match alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => self.kind == Kind::Rsa,
            Algorithm::ES256 | Algorithm::ES384 => self.kind == Kind::Ec(alg),
            Algorithm::EdDSA => self.kind == Kind::Ed,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => false,
        };
        family && self.alg.is_none_or(|a| a == alg)
    }
}

/// The usable signing keys of a JWKS. Symmetric (`oct`) keys, encryption keys and keys of
/// unsupported types or curves are skipped; a set must keep at least one.
pub struct KeySet {
    pub keys: Vec<Key>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| (&k.kid, k.kind, k.alg)))
            .finish()
    }
}

impl KeySet {
    pub fn parse(json: &str) -> Result<KeySet, Invalid> {
        let doc: serde_json::Value =
            serde_json::from_str(json).map_err(|e| Invalid::NotJson(e.to_string()))?;
        let list = doc
            .get("keys")
            .and_then(|k| k.as_array())
            .ok_or(Invalid::NoKeysList)?;
        // One by one: a key this library cannot read must not hide the others.
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (i, k) in list.iter().enumerate() {
            match Self::kind_of(k)
                .and_then(|()| serde_json::from_value::<Jwk>(k.clone()).map_err(|e| e.to_string()))
                .and_then(|jwk| Self::key(&jwk))
            {
                Ok(key) => keys.push(key),
                Err(why) => skipped.push(format!("keys[{i}]: {why}")),
            }
        }
        if keys.is_empty() {
            return Err(Invalid::NoUsableKey(skipped));
        }
        Ok(KeySet { keys })
    }

    /// The key's type and curve as written, so that a key the library cannot read is named
    /// by what is wrong with it rather than by serde's "no variant matched".
    fn kind_of(k: &serde_json::Value) -> Result<(), String> {
        let crv = k.get("crv").and_then(|c| c.as_str());
        let curve = |c: Option<&str>| c.map_or("missing".to_string(), |c| format!("{c:?}"));
        match k.get("kty").and_then(|t| t.as_str()) {
            None => Err("no `kty`".into()),
            Some("RSA") => Ok(()),
            Some("EC") => match crv {
                Some("P-256" | "P-384") => Ok(()),
                other => Err(format!("EC curve {} is not P-256 or P-384", curve(other))),
            },
            Some("OKP") => match crv {
                Some("Ed25519") => Ok(()),
                other => Err(format!("OKP curve {} is not Ed25519", curve(other))),
            },
            Some("oct") => Err("a symmetric (oct) key: HMAC tokens are not accepted".into()),
            Some(other) => Err(format!("key type {other:?} is not RSA, EC or OKP")),
        }
    }

    fn key(jwk: &Jwk) -> Result<Key, String> {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return Err("an encryption key (use: enc)".into());
        }
        let kind = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Kind::Rsa,
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => Kind::Ec(Algorithm::ES256),
                EllipticCurve::P384 => Kind::Ec(Algorithm::ES384),
                _ => return Err("EC curve is not P-256 or P-384".into()),
            },
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => Kind::Ed,
            AlgorithmParameters::OctetKeyPair(_) => return Err("OKP curve is not Ed25519".into()),
            AlgorithmParameters::OctetKey(_) => {
                return Err("a symmetric (oct) key: HMAC tokens are not accepted".into())
            }
        };
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(a) => Some(
                a.to_string()
                    .parse::<Algorithm>()
                    .map_err(|_| format!("alg {a} does not sign tokens"))?,
            ),
        };
        Ok(Key {
            kid: jwk.common.key_id.clone(),
            alg,
            kind,
            decoding: DecodingKey::from_jwk(jwk).map_err(|e| format!("key material: {e}"))?,
        })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ed25519 public key (RFC 8037's example).
    const ED: &str = r#"{"kty":"OKP","crv":"Ed25519","kid":"ed","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;

    #[test]
    fn usable_keys_are_kept_and_others_say_why_they_were_skipped() {
        let set = KeySet::parse(&format!(r#"{{"keys":[{ED}]}}"#)).unwrap();
        assert_eq!(set.len(), 1);
        assert!(set.has_kid("ed"));
        assert!(set.keys[0].fits(Algorithm::EdDSA));
        assert!(!set.keys[0].fits(Algorithm::RS256));

        let mixed =
            format!(r#"{{"keys":[{{"kty":"EC","crv":"P-999","x":"AAAA","y":"AAAA"}},{ED}]}}"#);
        assert_eq!(
            KeySet::parse(&mixed).unwrap().len(),
            1,
            "one bad key hides no other"
        );

        let bad = r#"{"keys":[{"kty":"EC","crv":"P-999","x":"AAAA","y":"AAAA"}]}"#;
        let err = KeySet::parse(bad).unwrap_err();
        assert!(
            matches!(&err, Invalid::NoUsableKey(why) if why.len() == 1),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains("keys[0]") && text.contains("P-999"), "{text}");
    }

    #[test]
    fn documents_that_are_no_key_set() {
        assert!(matches!(KeySet::parse("{"), Err(Invalid::NotJson(_))));
        assert_eq!(KeySet::parse("{}").unwrap_err(), Invalid::NoKeysList);
        assert_eq!(
            KeySet::parse(r#"{"keys":[]}"#).unwrap_err(),
            Invalid::NoUsableKey(Vec::new())
        );
        let oct = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#;
        assert!(KeySet::parse(oct).unwrap_err().to_string().contains("oct"));
        let enc = format!(
            r#"{{"keys":[{}]}}"#,
            ED.replace("\"kid\"", "\"use\":\"enc\",\"kid\"")
        );
        assert!(KeySet::parse(&enc).unwrap_err().to_string().contains("enc"));
    }
}
