//! A fake API server for tests: a `kube::Client` over a tower-test mock service whose requests are
//! recorded and answered by a routing closure (so polling waits can make any number of requests).

use http::{Request, Response, StatusCode};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;

/// One request the client sent.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// HTTP method (`GET`, `PATCH`, ...).
    pub method: String,
    /// URL path without the query.
    pub path: String,
    /// Raw query string (empty when none).
    pub query: String,
    /// The `content-type` header, empty when absent.
    pub content_type: String,
    /// The request body.
    pub body: Vec<u8>,
}

impl Recorded {
    /// The body as JSON (server-side apply sends JSON, which is valid YAML).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// True when the query holds `key=value`.
    pub fn has_query(&self, key: &str, value: &str) -> bool {
        self.query.split('&').any(|kv| kv == format!("{key}={value}"))
    }
}

/// What the fake server answers.
pub enum Reply {
    /// A JSON body with a status code.
    Json(u16, Value),
    /// A plain-text body (pod logs) with 200.
    Text(String),
}

/// A 404 `Status` the way the API server sends it.
pub fn not_found(what: &str) -> Reply {
    Reply::Json(404, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": format!("{what} not found")}))
}

/// A 200 JSON reply.
pub fn ok(v: Value) -> Reply {
    Reply::Json(200, v)
}

/// The fake API server: a client, the recorded requests, the serving task.
pub struct MockApi {
    /// A client whose every request reaches the routing closure.
    pub client: Client,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl MockApi {
    /// Starts serving: each request is recorded, then answered by `route`.
    pub fn start<F>(route: F) -> MockApi
    where
        F: Fn(&Recorded) -> Reply + Send + 'static,
    {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let (parts, body) = req.into_parts();
                let body = body.collect_bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                let rec = Recorded {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_string(),
                    query: parts.uri.query().unwrap_or("").to_string(),
                    content_type: parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string(),
                    body,
                };
                let reply = route(&rec);
                seen.lock().unwrap().push(rec);
                let (status, ctype, bytes) = match reply {
                    Reply::Json(code, v) => (code, "application/json", serde_json::to_vec(&v).unwrap()),
                    Reply::Text(t) => (200, "text/plain", t.into_bytes()),
                };
                let resp = Response::builder()
                    .status(StatusCode::from_u16(status).unwrap())
                    .header(http::header::CONTENT_TYPE, ctype)
                    .body(Body::from(bytes))
                    .unwrap();
                send.send_response(resp);
            }
        });
        MockApi { client: Client::new(service, "default"), requests, task }
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Requests with this method, in order.
    pub fn with_method(&self, method: &str) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.method == method).collect()
    }
}

impl Drop for MockApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An `APIResourceList` for discovery of `group_version` with (kind, plural, namespaced) entries.
pub fn resource_list(group_version: &str, kinds: &[(&str, &str, bool)]) -> Value {
    let resources: Vec<Value> = kinds
        .iter()
        .map(|(kind, plural, namespaced)| {
            json!({"name": plural, "singularName": "", "namespaced": namespaced, "kind": kind,
                   "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

/// Echoes an applied object back, as the server does (with an uid).
pub fn applied_echo(rec: &Recorded) -> Reply {
    let mut v = rec.json();
    v["metadata"]["uid"] = json!("00000000-0000-0000-0000-000000000001");
    ok(v)
}
