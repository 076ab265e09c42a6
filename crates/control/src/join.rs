//! `POST /join?identity=SPIFFE_ID`: a one-time join token for a proxy the CLI starts itself
//! (`weft exec`'s client proxy). The API listens on loopback only, like the rest of the local
//! control plane's CLI surface.

use crate::http_api::Api;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;

impl Api {
    pub(crate) fn join<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
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
        let identity = req
            .uri()
            .query()
            .and_then(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "identity")
                    .map(|(_, v)| v.into_owned())
            })
            .unwrap_or_default();
        if !identity.starts_with("spiffe://") {
            return answer(
                StatusCode::BAD_REQUEST,
                format!("identity {identity:?} is not a SPIFFE ID\n"),
            );
        }
        answer(StatusCode::OK, ca.join_token(&model::Identity(identity)))
    }
}
