//! Local TCP ports bridged to a pod's port through kube port-forward streams (websocket, kube `ws`).
//!
//! One port-forward stream per accepted connection, so a stream failing takes down one
//! connection, not the listener. The accept loop and the byte copy are generic over the
//! upstream so tests drive them with in-memory streams.
//!
//! kube's forwarder treats the end of our write side as the end of the port: a local client
//! that half-closes (shutdown(Write)) before reading its response loses the response. HTTP
//! clients (reqwest, curl) do not half-close, so gateway and Prometheus traffic is unaffected.

use anyhow::{anyhow, bail, Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::Client;
use std::future::Future;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinSet};

/// A listener on `127.0.0.1:<ephemeral>` forwarding every connection to one pod port; stops on drop.
#[derive(Debug)]
pub struct PortForward {
    local: SocketAddr,
    target: String,
    accept: AbortHandle,
}

impl PortForward {
    /// Binds `127.0.0.1:0` and forwards each accepted connection to `remote_port` of pod `namespace/pod`.
    pub async fn start(client: Client, namespace: &str, pod: &str, remote_port: u16) -> Result<PortForward> {
        let target = format!("pod {namespace}/{pod} port {remote_port}");
        let api: Api<Pod> = Api::namespaced(client, namespace);
        let pod = pod.to_string();
        let connect = move || {
            let (api, pod) = (api.clone(), pod.clone());
            async move { open_stream(&api, &pod, remote_port).await }
        };
        Self::serve(target, connect).await
    }

    /// Like [`PortForward::start`], but each connection goes to the first Ready pod matching
    /// `selector` at that moment, so a replaced pod (rollout, restart) does not break the forward.
    pub async fn start_for_selector(client: Client, namespace: &str, selector: &str, remote_port: u16) -> Result<PortForward> {
        first_ready_pod(&client, namespace, selector).await?;
        let target = format!("pods {selector:?} in {namespace} port {remote_port}");
        let (ns, selector) = (namespace.to_string(), selector.to_string());
        let connect = move || {
            let (client, ns, selector) = (client.clone(), ns.clone(), selector.clone());
            async move {
                let pod = first_ready_pod(&client, &ns, &selector).await?;
                open_stream(&Api::namespaced(client, &ns), &pod, remote_port).await
            }
        };
        Self::serve(target, connect).await
    }

    /// Binds `127.0.0.1:0` and bridges each accepted connection to a stream from `connect`.
    pub async fn serve<C, Fut, S>(target: String, connect: C) -> Result<PortForward>
    where
        C: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S>> + Send + 'static,
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.with_context(|| format!("bind a local port for {target}"))?;
        let local = listener.local_addr()?;
        let task = tokio::spawn(accept_loop(listener, target.clone(), connect));
        tracing::debug!(%local, %target, "port-forward listening");
        Ok(PortForward { local, target, accept: task.abort_handle() })
    }

    /// The local address to connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// `http://127.0.0.1:<port>`, for HTTP clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.local)
    }

    /// What this forwards to, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection task.
        self.accept.abort();
    }
}

async fn accept_loop<C, Fut, S>(listener: TcpListener, target: String, connect: C)
where
    C: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let upstream = connect();
                    let target = target.clone();
                    connections.spawn(async move {
                        if let Err(e) = forward_connection(tcp, upstream).await {
                            tracing::warn!(%peer, %target, "port-forward connection failed: {e:#}");
                        }
                    });
                }
                Err(e) => tracing::warn!(%target, "port-forward accept failed: {e}"),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn forward_connection<Fut, S>(mut tcp: TcpStream, upstream: Fut) -> Result<()>
where
    Fut: Future<Output = Result<S>>,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut upstream = upstream.await?;
    tcp.set_nodelay(true).ok();
    bridge(&mut tcp, &mut upstream).await?;
    Ok(())
}

/// Copies bytes both ways until both sides have closed; returns (bytes a->b, bytes b->a).
pub async fn bridge<A, B>(a: &mut A, b: &mut B) -> std::io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    tokio::io::copy_bidirectional(a, b).await
}

/// A stream to the pod port; the port-forwarder is joined in the background once the stream ends.
async fn open_stream(api: &Api<Pod>, pod: &str, port: u16) -> Result<impl AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    let what = || format!("port-forward to pod {}/{pod} port {port}", api.namespace().unwrap_or("default"));
    let mut pf = api.portforward(pod, &[port]).await.with_context(what)?;
    let stream = pf.take_stream(port).ok_or_else(|| anyhow!("{}: no stream for the port", what()))?;
    if let Some(error) = pf.take_error(port) {
        let label = what();
        tokio::spawn(async move {
            if let Some(msg) = error.await {
                tracing::warn!("{label}: {msg}");
            }
        });
    }
    tokio::spawn(async move {
        if let Err(e) = pf.join().await {
            tracing::debug!("port-forward closed with an error: {e}");
        }
    });
    Ok(stream)
}

/// The name of the first Ready, non-terminating pod matching `selector` in `ns` (sorted by name).
pub async fn first_ready_pod(client: &Client, ns: &str, selector: &str) -> Result<String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pods = api.list(&ListParams::default().labels(selector)).await.with_context(|| format!("list pods {selector:?} in {ns}"))?;
    let mut ready: Vec<String> = pods
        .items
        .iter()
        .filter(|p| crate::k8s::waits::pod_unready(p).is_none())
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    ready.sort();
    match ready.into_iter().next() {
        Some(name) => Ok(name),
        None if pods.items.is_empty() => bail!("no pod matches {selector:?} in namespace {ns}"),
        None => bail!("none of the {} pod(s) matching {selector:?} in namespace {ns} is Ready", pods.items.len()),
    }
}

/// The label selector of the Envoy Gateway proxy pods serving Gateway `ns/name`.
pub fn envoy_proxy_selector(gateway_ns: &str, gateway: &str) -> String {
    format!("gateway.envoyproxy.io/owning-gateway-name={gateway},gateway.envoyproxy.io/owning-gateway-namespace={gateway_ns}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bridge_copies_both_ways_until_both_sides_close() {
        let (mut client_side, mut a) = tokio::io::duplex(64);
        let (mut b, mut server_side) = tokio::io::duplex(64);
        let copy = tokio::spawn(async move { bridge(&mut a, &mut b).await });
        client_side.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        client_side.shutdown().await.unwrap();
        let mut got = Vec::new();
        server_side.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"GET / HTTP/1.1\r\n\r\n");
        // a reply larger than the duplex buffer, multi-byte text included
        let reply = "HTTP/1.1 200 OK\r\n\r\nnaïve ✓ ".repeat(50);
        server_side.write_all(reply.as_bytes()).await.unwrap();
        server_side.shutdown().await.unwrap();
        let mut back = String::new();
        client_side.read_to_string(&mut back).await.unwrap();
        assert_eq!(back, reply);
        let (up, down) = copy.await.unwrap().unwrap();
        assert_eq!((up, down), (18, reply.len() as u64));
    }

    fn echo_upstream() -> impl Fn() -> std::future::Ready<Result<tokio::io::DuplexStream>> + Send + Sync + 'static {
        || {
            let (ours, mut theirs) = tokio::io::duplex(1024);
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                loop {
                    match theirs.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if theirs.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
            std::future::ready(Ok(ours))
        }
    }

    #[tokio::test]
    async fn each_local_connection_gets_its_own_upstream_stream() {
        let pf = PortForward::serve("test echo".into(), echo_upstream()).await.unwrap();
        assert!(pf.local_addr().ip().is_loopback());
        let mut one = TcpStream::connect(pf.local_addr()).await.unwrap();
        let mut two = TcpStream::connect(pf.local_addr()).await.unwrap();
        one.write_all(b"first").await.unwrap();
        two.write_all(b"second").await.unwrap();
        let mut buf = [0u8; 6];
        two.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"second");
        one.read_exact(&mut buf[..5]).await.unwrap();
        assert_eq!(&buf[..5], b"first");
    }

    #[tokio::test]
    async fn a_failing_upstream_closes_only_that_connection() {
        let pf = PortForward::serve("broken".into(), || async { Err::<tokio::io::DuplexStream, _>(anyhow!("pod gone")) })
            .await
            .unwrap();
        let mut conn = TcpStream::connect(pf.local_addr()).await.unwrap();
        let mut buf = Vec::new();
        // the server side is dropped: the read ends (EOF or reset), it does not hang
        let _ = conn.read_to_end(&mut buf).await;
        assert!(buf.is_empty());
        // the listener still accepts
        TcpStream::connect(pf.local_addr()).await.unwrap();
    }

    #[tokio::test]
    async fn dropping_the_port_forward_closes_open_connections() {
        let pf = PortForward::serve("test echo".into(), echo_upstream()).await.unwrap();
        let mut conn = TcpStream::connect(pf.local_addr()).await.unwrap();
        conn.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).await.unwrap();
        drop(pf);
        let mut rest = Vec::new();
        let n = tokio::time::timeout(std::time::Duration::from_secs(2), conn.read_to_end(&mut rest))
            .await
            .expect("the connection closes once the forward is dropped");
        assert!(n.map_or(true, |n| n == 0));
    }

    #[tokio::test]
    async fn a_selector_forward_refuses_to_start_without_a_ready_pod() {
        let api = crate::k8s::testing::MockApi::start(|r| {
            assert_eq!(r.path, "/api/v1/namespaces/monitoring/pods");
            crate::k8s::testing::ok(serde_json::json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}))
        });
        let err = PortForward::start_for_selector(api.client.clone(), "monitoring", "app.kubernetes.io/name=prometheus", 9090).await.unwrap_err();
        assert!(err.to_string().contains("no pod matches \"app.kubernetes.io/name=prometheus\" in namespace monitoring"), "{err}");
    }

    #[test]
    fn the_envoy_proxy_selector_names_gateway_and_namespace() {
        assert_eq!(
            envoy_proxy_selector("shop", "eg"),
            "gateway.envoyproxy.io/owning-gateway-name=eg,gateway.envoyproxy.io/owning-gateway-namespace=shop"
        );
    }
}
