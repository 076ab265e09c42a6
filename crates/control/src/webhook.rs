//! The admission webhook: the Kubernetes API server sends every pod creation the
//! MutatingWebhookConfiguration selects (`weft install --kubernetes`) as an `AdmissionReview`;
//! the answer injects the pod as `weft inject` would (the same [`config::inject`]), as a JSON
//! patch. `POST /inject/namespace` is called for pods of namespaces that opted in (every pod
//! not opted out is injected); `POST /inject` for the others (only pods that opt in; Linkerd's
//! namespace annotation needs the namespace, which the API's watch will give). A pod
//! whose annotations do not parse is refused with the errors. Served over TLS with a
//! certificate of the mesh CA for the Service's DNS names, whose roots are the webhook's
//! `caBundle`.

use crate::listener::ServerTls;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Largest AdmissionReview accepted (a pod with large embedded configuration is still far
/// below; the API server's own request limit is 3 MiB).
const MAX_BODY: usize = 4 << 20;

/// The DNS names of the control plane's Service in `namespace`, which the API server calls.
pub fn dns_names(namespace: &str) -> Vec<String> {
    let svc = model::names::CONTROL_ACCOUNT;
    vec![
        format!("{svc}.{namespace}.svc"),
        format!("{svc}.{namespace}.svc.cluster.local"),
    ]
}

/// Serves the webhook on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    ca: Arc<crate::ca::Ca>,
    dns: Vec<String>,
    opts: config::inject::Options,
    shutdown: CancellationToken,
) {
    use tokio_stream::StreamExt;
    let tls = Arc::new(ServerTls::for_webhook(ca, dns));
    let mut incoming = crate::listener::incoming(listener, Some(tls), shutdown.clone());
    let opts = Arc::new(opts);
    loop {
        let conn = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = incoming.next() => match c {
                Some(Ok(c)) => c,
                Some(Err(_)) => continue,
                None => return,
            },
        };
        let opts = opts.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let opts = opts.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, &opts).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(conn), svc)
                .await;
        });
    }
}

async fn handle(req: Request<Incoming>, opts: &config::inject::Options) -> Response<Full<Bytes>> {
    let by_default = match (req.method(), req.uri().path()) {
        (&Method::POST, "/inject/namespace") => true,
        (&Method::POST, "/inject") => false,
        (&Method::GET, "/healthz") => return answer(StatusCode::OK, "ok\n".into()),
        _ => {
            return answer(
                StatusCode::NOT_FOUND,
                "POST an AdmissionReview to /inject or /inject/namespace\n".into(),
            )
        }
    };
    let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return answer(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}\n"),
            )
        }
    };
    let review: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return answer(
                StatusCode::BAD_REQUEST,
                format!("the body is not an AdmissionReview: {e}\n"),
            )
        }
    };
    let opts = config::inject::Options {
        by_default,
        ..opts.clone()
    };
    let mut rsp = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(&review_answer(&review, &opts)).unwrap_or_default(),
    )));
    rsp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    rsp
}

fn answer(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from(body)));
    *rsp.status_mut() = status;
    rsp
}

/// The workload a pod belongs to: its Deployment's (its ReplicaSet's name less the
/// `pod-template-hash`), else its owner's, else its own name (or `generateName` less its `-`).
pub fn workload_of(pod: &Value) -> String {
    let meta = &pod["metadata"];
    let hash = meta["labels"]["pod-template-hash"].as_str();
    if let Some(owner) = meta["ownerReferences"].as_array().and_then(|o| o.first()) {
        let name = owner["name"].as_str().unwrap_or_default();
        if let (Some("ReplicaSet"), Some(hash)) = (owner["kind"].as_str(), hash) {
            if let Some(deployment) = name.strip_suffix(&format!("-{hash}")) {
                return deployment.to_string();
            }
        }
        if !name.is_empty() {
            return name.to_string();
        }
    }
    meta["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .or_else(|| {
            meta["generateName"]
                .as_str()
                .map(|g| g.trim_end_matches('-').to_string())
        })
        .unwrap_or_default()
}

/// The AdmissionReview answering `review`: allowed, with the JSON patch that injects the pod
/// (none when it is not injected), or refused with the injection's errors.
pub fn review_answer(review: &Value, opts: &config::inject::Options) -> Value {
    let request = &review["request"];
    let uid = request["uid"].clone();
    let reply = |response: Value| {
        let mut r = response;
        r["uid"] = uid.clone();
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": r})
    };
    let object = &request["object"];
    if request["kind"]["kind"] != "Pod" || !object.is_object() {
        return reply(json!({"allowed": true}));
    }
    let mut pod = object.clone();
    pod["apiVersion"] = "v1".into();
    pod["kind"] = "Pod".into();
    pod["metadata"]["name"] = workload_of(object).into();
    if let Some(ns) = request["namespace"].as_str().filter(|n| !n.is_empty()) {
        pod["metadata"]["namespace"] = ns.into();
    }
    let text = serde_json::to_string(&pod).unwrap_or_default();
    let file = std::path::Path::new("<admission>");
    let injected = match config::inject::inject(file, &text, opts) {
        Ok(i) => i,
        Err(errors) => {
            let message: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            return reply(json!({
                "allowed": false,
                "status": {"code": 400, "message": format!("weft: cannot inject this pod: {}", message.join("; "))},
            }));
        }
    };
    if injected.objects.first().map(|o| &o.1) != Some(&config::inject::Outcome::Injected) {
        return reply(json!({"allowed": true}));
    }
    let Ok(after) = serde_yaml_ng::from_str::<Value>(&injected.yaml) else {
        return reply(json!({"allowed": true}));
    };
    let patch = json!([
        {"op": "add", "path": "/metadata/annotations", "value": merged_annotations(object, &after)},
        {"op": "replace", "path": "/spec", "value": after["spec"]},
    ]);
    use base64::Engine as _;
    let patch = base64::engine::general_purpose::STANDARD
        .encode(serde_json::to_vec(&patch).unwrap_or_default());
    reply(json!({"allowed": true, "patchType": "JSONPatch", "patch": patch}))
}

/// The pod's annotations with injection's added.
fn merged_annotations(before: &Value, after: &Value) -> Value {
    let mut all = before["metadata"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if let Some(added) = after["metadata"]["annotations"].as_object() {
        for (k, v) in added {
            all.insert(k.clone(), v.clone());
        }
    }
    Value::Object(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_workload_is_its_deployments_or_owners_or_its_own() {
        let rs = json!({"metadata": {"generateName": "web-7d9f8-", "labels": {"pod-template-hash": "7d9f8"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7d9f8"}]}});
        assert_eq!(workload_of(&rs), "web");
        let job = json!({"metadata": {"ownerReferences": [{"kind": "Job", "name": "migrate"}]}});
        assert_eq!(workload_of(&job), "migrate");
        assert_eq!(
            workload_of(&json!({"metadata": {"name": "debug"}})),
            "debug"
        );
        assert_eq!(
            workload_of(&json!({"metadata": {"generateName": "batch-"}})),
            "batch"
        );
    }
}
