//! Root rotation without downtime through the running control plane (`weft ca`): `POST
//! /ca/prepare` makes the next root and sends the two-root trust bundle to every proxy, `POST
//! /ca/activate` makes the new root sign from then on (proxies move to it as they renew), and
//! `POST /ca/retire` drops the old root once every leaf is renewed. Each answers once every
//! proxy runs the snapshot carrying the new bundle.

use crate::http_api::Api;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use std::time::Duration;

/// How long a step waits for every proxy to take the new bundle.
const WAIT: Duration = Duration::from_secs(5);

impl Api {
    pub(crate) async fn ca_step(&self, step: &str) -> Response<Full<Bytes>> {
        let answer = |status: StatusCode, body: String| {
            let mut rsp = Response::new(Full::new(Bytes::from(body)));
            *rsp.status_mut() = status;
            rsp
        };
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
            "retire" => ca
                .retire_roots()
                .map(|()| "old roots dropped from the trust bundle"),
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
                let (proxies, all) = self.registry.wait_applied(version, WAIT).await;
                let roots = ca.bundle().len();
                let reached = if all {
                    format!("all {proxies} proxies trust the {roots}-root bundle")
                } else {
                    format!("warning: not every proxy took the {roots}-root bundle within {WAIT:?}")
                };
                answer(StatusCode::OK, format!("{what}; {reached}\n"))
            }
        }
    }
}
