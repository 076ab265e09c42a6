//! `POST /join` with `{"identity": SPIFFE_ID}`: a one-time join token for a proxy the CLI
//! starts itself (`weft exec`'s client proxy). Like every call of the API it needs the mesh's
//! admin credential.

use crate::http_api::Api;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

impl Api {
    pub(crate) async fn join(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        use http_body_util::BodyExt;
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
        #[derive(serde::Deserialize)]
        struct Join {
            identity: String,
        }
        let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => return answer(StatusCode::BAD_REQUEST, format!("the body: {e}\n")),
        };
        let identity = match serde_json::from_slice::<Join>(&body) {
            Ok(j) => j.identity,
            Err(e) => {
                return answer(
                    StatusCode::BAD_REQUEST,
                    format!("the body is not {{\"identity\": SPIFFE_ID}}: {e}\n"),
                )
            }
        };
        // Only what the CA would sign: a canonical SPIFFE ID of the mesh's trust domain.
        let identity = model::Identity(identity);
        if let Err(e) = ca.check_identity(&identity) {
            return answer(StatusCode::BAD_REQUEST, format!("{e}\n"));
        }
        match ca.mint_join_token(&identity).await {
            Ok(token) => answer(StatusCode::OK, token),
            Err(e) => answer(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        }
    }
}
