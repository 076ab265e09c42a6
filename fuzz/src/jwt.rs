//! `jwt`: end-user JWT checks ([`proxy::jwt`]). The first input byte picks what the rest is:
//!
//! - `0`: a JWKS document, parsed into keys ([`KeySet::parse`]);
//! - `1`: a token, sent as `Authorization: Bearer …` to an authenticator whose keys are
//!   [`JWKS`] (RSA, EC P-256, Ed25519);
//! - `2`: a payload (the claims, JSON or not), signed with the EC key of [`JWKS`] under a fixed
//!   header, then checked: this reaches past the signature (`exp`, `nbf`, `aud`, the claims
//!   copied to headers);
//! - `3`: a header and a payload separated by a newline, both signed as they are.
//!
//! Any outcome is fine but a panic; a token that passes must name the rule's issuer.

use jsonwebtoken::{Algorithm, EncodingKey};
use model::security::{JwtRule, RequestAuthn, Scope, SecuritySpec};
use proxy::jwt::{JwksStore, JwtAuthenticator, KeySet};
use std::sync::OnceLock;

/// The issuer the authenticator accepts.
pub const ISSUER: &str = "https://issuer.example";

/// A P-256 key made for these harnesses only (kid `ec`); its public half is in [`JWKS`].
const EC_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgi19UqVQ3BM3VLZvI
IB1glaamhXTpDReQeXRemSw25G2hRANCAAQQJ8uIw6vsZwHXtFU36vXPBbSsSLhZ
szRe6sIFNk4Gxb6110okFaCxMsmFg7a2dCx1q0/mB1UQNdd2H7s8vy51
-----END PRIVATE KEY-----
";

/// The key set tokens are checked against: the EC key above, the proxy's RSA test key and an
/// Ed25519 key.
pub const JWKS: &str = r#"{"keys": [
  {"kty": "EC", "kid": "ec", "crv": "P-256", "use": "sig",
   "x": "ECfLiMOr7GcB17RVN-r1zwW0rEi4WbM0XurCBTZOBsU",
   "y": "vrXXSiQVoLEyyYWDtrZ0LHWrT-YHVRA113Yfuzy_LnU"},
  {"kty": "RSA", "kid": "rsa", "alg": "RS256", "e": "AQAB",
   "n": "rQ_l9HYPUXWS0GWeLIBXZITeDTKMTGL96LS_QHqqiCoeiell700Aqbwr0mDhbh1UkpS-cxoShypSOOf8MmSkWmba9L30CVSo-uZVVb5WOH2WMBbrrERt2CO0XFsda_A3YWdafCtooVIH2_vnuOzN9p89wM2yiPywFbyyqJfhKq0B_ahggieMXDUSrZWnsTCmUTI-IIfuiEfFB7LkWAay8QIu0uVMe0B8_at626k5qqltgy29VjfRlg1qNRCgz5PehFLpNCFh5a2HG_5KD8jmk_TjGTxnsmAggAEW7k1iNClqG9e562GhoVW1dxpzmwmj8z59JrxE6BHmcpKoTuvT0w"},
  {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "wPrOqIbzSqaNOQp7BM_o5cr9nmn9lrxJER8nF-zCj9M"}
]}"#;

/// The fixed header of mode `2`.
const EC_HEADER: &str = r#"{"alg":"ES256","kid":"ec","typ":"JWT"}"#;

struct Fixture {
    auth: JwtAuthenticator,
    key: EncodingKey,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rule = JwtRule {
            issuer: ISSUER.into(),
            audiences: vec!["web".into(), "api".into()],
            jwks: Some(JWKS.into()),
            output_payload_to_header: Some("x-jwt-payload".into()),
            output_claim_to_headers: vec![
                ("x-jwt-sub".into(), "sub".into()),
                ("x-jwt-group".into(), "groups.main".into()),
            ],
            ..Default::default()
        };
        let mut spec = SecuritySpec::new();
        spec.request_authns = vec![RequestAuthn {
            name: "default/jwt".into(),
            scope: Scope::Mesh,
            rules: vec![rule],
        }];
        let store = JwksStore::new(crate::idle_runtime().handle().clone());
        let auth = JwtAuthenticator::compile(&spec, "default", &Default::default(), &store);
        assert!(auth.errors().is_empty(), "{:?}", auth.errors());
        let key = EncodingKey::from_ec_pem(EC_PRIVATE_PEM.as_bytes()).expect("the EC key");
        Fixture { auth, key }
    })
}

pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => {
            if let Ok(json) = std::str::from_utf8(rest) {
                let _ = KeySet::parse(json);
            }
        }
        1 => check(&String::from_utf8_lossy(rest)),
        2 => check(&signed(EC_HEADER.as_bytes(), rest)),
        _ => {
            let (header, payload) = match rest.iter().position(|b| *b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &b""[..]),
            };
            check(&signed(header, payload))
        }
    }
}

/// `header.payload.signature`, signed with the EC key.
fn signed(header: &[u8], payload: &[u8]) -> String {
    let message = format!("{}.{}", b64(header), b64(payload));
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &fixture().key, Algorithm::ES256)
            .expect("signing with the EC key");
    format!("{message}.{signature}")
}

fn check(token: &str) {
    let Ok(value) = http::HeaderValue::try_from(format!("Bearer {token}")) else {
        return;
    };
    let mut req = http::Request::builder()
        .uri("/headers?x=1")
        .body(())
        .expect("a request");
    req.headers_mut().insert(http::header::AUTHORIZATION, value);
    if let Ok(Some(jwt)) = fixture().auth.authenticate_request(&mut req) {
        assert_eq!(jwt.issuer, ISSUER);
        assert_eq!(jwt.principal, format!("{ISSUER}/{}", jwt.subject));
    }
}

/// Base64url without padding, as JWTs write their parts.
fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_token_of_the_issuer_passes() {
        let exp = 4_000_000_000u64;
        let claims = format!(r#"{{"iss":"{ISSUER}","sub":"alice","aud":"web","exp":{exp}}}"#);
        let token = signed(EC_HEADER.as_bytes(), claims.as_bytes());
        let mut req = http::Request::builder().uri("/").body(()).unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let jwt = fixture()
            .auth
            .authenticate_request(&mut req)
            .unwrap()
            .unwrap();
        assert_eq!(jwt.subject, "alice");
    }

    #[test]
    fn the_key_set_has_every_key() {
        assert_eq!(KeySet::parse(JWKS).unwrap().len(), 3);
    }
}
