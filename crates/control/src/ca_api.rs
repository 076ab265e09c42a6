//! Root rotation without downtime through the running control plane (`weft ca`): `POST
//! /ca/prepare` makes the next root and sends the two-root trust bundle to every proxy, `POST
//! /ca/activate` makes the new root sign from then on (the snapshot carries the CA's new
//! generation, and every proxy renews its leaf at once), and `POST /ca/retire` drops the old
//! root — refused (409) while a proxy still reports a leaf of an older generation, unless the
//! body says `{"force": true}`. Each answers once every proxy runs the snapshot carrying the
//! new bundle (activate: once every proxy holds a leaf of the new root, up to 5 s).

use crate::http_api::Api;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use std::time::Duration;

fn plain(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from(body)));
    *rsp.status_mut() = status;
    rsp
}

/// How long a step waits for every proxy to take the new bundle.
const WAIT: Duration = Duration::from_secs(5);

/// What a CA step's body may say.
#[derive(Default, serde::Deserialize)]
struct StepBody {
    /// `retire` even while proxies hold leaves of the old root (their new connections to peers
    /// that dropped it then fail until they renew).
    #[serde(default)]
    force: bool,
}

/// What `POST /ca/operator` asks for.
#[derive(serde::Deserialize)]
struct OperatorBody {
    name: String,
    /// How long the certificate is valid [default: 30 days].
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

/// The longest an operator certificate may be valid.
const OPERATOR_MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);
/// How long an operator certificate is valid unless asked otherwise.
const OPERATOR_DEFAULT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

impl Api {
    /// `POST /ca/operator` with `{"name": NAME, "ttl_seconds": N}`: a key and a client
    /// certificate for operator NAME (`spiffe://TRUST_DOMAIN/ns/weft-system/sa/operator-NAME`),
    /// which the API takes in place of the admin credential over TLS, and the trust bundle to
    /// verify the API with. The caller is an admin (the credential, or an operator's
    /// certificate).
    pub(crate) async fn operator_request(
        &self,
        req: http::Request<hyper::body::Incoming>,
    ) -> Response<Full<Bytes>> {
        use http_body_util::BodyExt;
        let Some(ca) = &self.ca else {
            return plain(
                StatusCode::NOT_FOUND,
                "this control plane runs no CA\n".into(),
            );
        };
        let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => return plain(StatusCode::BAD_REQUEST, format!("the body: {e}\n")),
        };
        let asked: OperatorBody = match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    format!("the body is not {{\"name\": NAME, \"ttl_seconds\": N}}: {e}\n"),
                )
            }
        };
        let ttl = asked
            .ttl_seconds
            .map_or(OPERATOR_DEFAULT_TTL, Duration::from_secs);
        if ttl.is_zero() || ttl > OPERATOR_MAX_TTL {
            return plain(
                StatusCode::BAD_REQUEST,
                format!(
                    "ttl_seconds: between 1 and {} (366 days)\n",
                    OPERATOR_MAX_TTL.as_secs()
                ),
            );
        }
        match ca.operator_cert(&asked.name, ttl) {
            Ok(cert) => {
                let not_after = cert
                    .not_after
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                tracing::info!(operator = %asked.name, not_after, "operator certificate issued");
                crate::http_api::json_response(&serde_json::json!({
                    "identity": model::Identity::operator(&ca.config().trust_domain, &asked.name).0,
                    "certificate": cert.chain_pem(),
                    "key": cert.key_pem(),
                    "trust_bundle": ca.bundle_pem(),
                    "not_after": not_after,
                }))
            }
            Err(e) => plain(
                StatusCode::BAD_REQUEST,
                format!(
                    "operator name {:?}: a letter or digit first, then letters, digits, '-', '.', '_'; at most 63 ({e})\n",
                    asked.name
                ),
            ),
        }
    }

    /// `POST /ca/STEP` with a JSON body (`{}`, or `{"force": true}` for retire).
    pub(crate) async fn ca_request(
        &self,
        step: &str,
        req: http::Request<hyper::body::Incoming>,
    ) -> Response<Full<Bytes>> {
        use http_body_util::BodyExt;
        let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => return plain(StatusCode::BAD_REQUEST, format!("the body: {e}\n")),
        };
        let parsed = if body.iter().all(u8::is_ascii_whitespace) {
            Ok(StepBody::default())
        } else {
            serde_json::from_slice::<StepBody>(&body)
        };
        match parsed {
            Ok(b) => self.ca_step(step, b.force).await,
            Err(e) => plain(
                StatusCode::BAD_REQUEST,
                format!("the body is not {{}} or {{\"force\": true}}: {e}\n"),
            ),
        }
    }

    /// The proxies whose leaf an older root than the signing one signed, by name.
    fn on_old_leaves(&self, generation: u64) -> Vec<String> {
        self.registry
            .proxies()
            .iter()
            .filter(|p| !p.draining && p.leaf_generation < generation)
            .map(|p| p.name())
            .collect()
    }

    pub(crate) async fn ca_step(&self, step: &str, force: bool) -> Response<Full<Bytes>> {
        let answer = plain;
        let Some(ca) = &self.ca else {
            return answer(
                StatusCode::NOT_FOUND,
                "this control plane runs no CA\n".into(),
            );
        };
        let done = match step {
            "prepare" => ca.prepare_root().map(|new| {
                if new {
                    "next root prepared and added to the trust bundle"
                } else {
                    "a next root was already prepared"
                }
            }),
            "activate" => ca.activate_root().map(|switched| {
                if switched {
                    "the new root signs from now on; the old one stays trusted until retired"
                } else {
                    "no prepared root to activate (run prepare first)"
                }
            }),
            "retire" => {
                let behind = self.on_old_leaves(ca.generation());
                if !behind.is_empty() && !force {
                    return answer(
                        StatusCode::CONFLICT,
                        format!(
                            "not retiring: {} still hold a certificate of the old root ({}); they renew within seconds of `weft ca activate` (or `rotate`), so retry shortly; --force retires now and their new connections fail until they renew\n",
                            behind.len(),
                            behind.join(", ")
                        ),
                    );
                }
                if !behind.is_empty() {
                    tracing::warn!(proxies = ?behind, "old root retired by force while proxies still hold its leaves");
                }
                ca.retire_roots()
                    .map(|()| "old roots dropped from the trust bundle")
            }
            other => {
                return answer(
                    StatusCode::NOT_FOUND,
                    format!("no CA step {other:?}: prepare, activate or retire\n"),
                )
            }
        };
        match done {
            Err(e) => answer(StatusCode::INTERNAL_SERVER_ERROR, format!("CA: {e}\n")),
            Ok(what) => {
                let version = self.registry.republish();
                let answers = self.registry.wait_applied(version, WAIT).await;
                let (proxies, all) = (answers.proxies, answers.all_applied());
                let roots = ca.bundle().len();
                let reached = if all {
                    format!("all {proxies} proxies trust the {roots}-root bundle")
                } else {
                    format!("warning: not every proxy took the {roots}-root bundle within {WAIT:?}")
                };
                // After activate, proxies renew their leaves at once (the snapshot says which
                // generation signs now): say when they all hold one of the new root.
                let renewed = if step == "activate" {
                    let generation = ca.generation();
                    let deadline = tokio::time::Instant::now() + WAIT;
                    let mut changes = self.registry.watch_generation();
                    let mut behind = self.on_old_leaves(generation);
                    while !behind.is_empty() {
                        tokio::select! {
                            _ = changes.changed() => {}
                            _ = tokio::time::sleep_until(deadline) => break,
                        }
                        behind = self.on_old_leaves(generation);
                    }
                    if behind.is_empty() {
                        "; every proxy holds a certificate of the new root".to_string()
                    } else {
                        format!(
                            "; warning: still on a certificate of the old root after {WAIT:?}: {}",
                            behind.join(", ")
                        )
                    }
                } else {
                    String::new()
                };
                answer(StatusCode::OK, format!("{what}; {reached}{renewed}\n"))
            }
        }
    }
}
