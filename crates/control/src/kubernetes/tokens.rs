//! Kubernetes ServiceAccount tokens as join credentials: a proxy in a pod presents its
//! projected token (audience `weft`, as injection mounts it) and the control plane asks the API
//! server whose it is (a TokenReview); it signs a certificate only for that ServiceAccount's
//! SPIFFE identity, `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT`. Renewal tokens are minted
//! and spent here, in memory, as the CA's own are.

use crate::ca::{CaError, SharedTokens};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use model::Identity;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

/// The audience proxies' tokens are minted for and checked against.
pub const AUDIENCE: &str = config::inject::TOKEN_AUDIENCE;

/// One-time tokens of this control plane, and ServiceAccount tokens checked by the API server.
pub struct ServiceAccountTokens {
    client: kube::Client,
    trust_domain: String,
    local: Mutex<HashMap<String, (Identity, SystemTime)>>,
}

impl ServiceAccountTokens {
    pub fn new(client: kube::Client, trust_domain: &str) -> ServiceAccountTokens {
        ServiceAccountTokens {
            client,
            trust_domain: trust_domain.into(),
            local: Mutex::new(HashMap::new()),
        }
    }

    /// The identity the API server says `token` stands for.
    async fn review(&self, token: &str) -> Result<Identity, CaError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![AUDIENCE.to_string()]),
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let done = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| CaError::TokenStore(format!("TokenReview: {e}")))?;
        let status = done.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status.error.unwrap_or_else(|| "not authenticated".into());
            return Err(CaError::TokenStore(format!(
                "the API server refused the ServiceAccount token: {why}"
            )));
        }
        if let Some(audiences) = &status.audiences {
            if !audiences.iter().any(|a| a == AUDIENCE) {
                return Err(CaError::TokenStore(format!(
                    "the ServiceAccount token is not for audience {AUDIENCE:?} (it is for {audiences:?})"
                )));
            }
        }
        let username = status.user.and_then(|u| u.username).unwrap_or_default();
        identity_of(&self.trust_domain, &username)
            .ok_or_else(|| CaError::TokenStore(format!("{username:?} is not a ServiceAccount")))
    }
}

/// A client of the API server at `url` (without one: the cluster the control plane runs in, or
/// the current context of `$KUBECONFIG`).
pub async fn client(url: Option<&str>) -> Result<kube::Client, String> {
    let config = match url {
        Some(u) => kube::Config::new(u.parse().map_err(|e| format!("{u:?}: {e}"))?),
        None => kube::Config::infer()
            .await
            .map_err(|e| format!("no Kubernetes API to ask (in a cluster, or $KUBECONFIG): {e}"))?,
    };
    kube::Client::try_from(config).map_err(|e| e.to_string())
}

/// `system:serviceaccount:NAMESPACE:ACCOUNT` → its SPIFFE identity.
pub fn identity_of(trust_domain: &str, username: &str) -> Option<Identity> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (ns, account) = rest.split_once(':')?;
    if ns.is_empty() || account.is_empty() || account.contains(':') {
        return None;
    }
    Some(Identity(format!(
        "spiffe://{trust_domain}/ns/{ns}/sa/{account}"
    )))
}

/// A JSON Web Token's shape: three base64url parts (a ServiceAccount token; the CA's own are
/// hex).
fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[tonic::async_trait]
impl SharedTokens for ServiceAccountTokens {
    async fn mint(&self, identity: &Identity, expires: SystemTime) -> Result<String, CaError> {
        let token = crate::ca::random_token();
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        let now = SystemTime::now();
        local.retain(|_, (_, until)| *until > now);
        local.insert(token.clone(), (identity.clone(), expires));
        Ok(token)
    }

    async fn spend(&self, token: &str, identity: &Identity) -> Result<(), CaError> {
        {
            let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((bound, until)) = local.get(token) {
                if *until <= SystemTime::now() {
                    local.remove(token);
                    return Err(CaError::UnknownToken);
                }
                if bound != identity {
                    return Err(CaError::TokenIdentityMismatch {
                        token_for: bound.clone(),
                        requested: identity.clone(),
                    });
                }
                local.remove(token);
                return Ok(());
            }
        }
        if !looks_like_jwt(token) {
            return Err(CaError::UnknownToken);
        }
        let reviewed = self.review(token).await?;
        if reviewed != *identity {
            return Err(CaError::TokenIdentityMismatch {
                token_for: reviewed,
                requested: identity.clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_names_map_to_spiffe_identities() {
        assert_eq!(
            identity_of("cluster.local", "system:serviceaccount:shop:order"),
            Some(Identity("spiffe://cluster.local/ns/shop/sa/order".into()))
        );
        for bad in [
            "alice",
            "system:serviceaccount:shop",
            "system:serviceaccount::x",
            "system:node:n1",
        ] {
            assert_eq!(identity_of("td", bad), None, "{bad}");
        }
        assert!(looks_like_jwt("eyJhbGciOi.eyJpc3Mi.c2lnbmF0dXJl"));
        assert!(!looks_like_jwt("0123abcd"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a.b.c d"));
    }
}
