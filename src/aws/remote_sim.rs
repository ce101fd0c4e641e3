//! A [`CloudProvider`] that posts every call to a simulated AWS served by another process
//! (`shop-controller dev --share-sim`, or a test hosting one), so several controller processes
//! act on one simulated account. The calls are those of [`crate::cloud_calls`];
//! each names this replica in a header. Calls are counted here like the SDK adapters count
//! theirs, by `capability:method` (the simulation's own counters hold the AWS operation names).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use reconcilers::cloud::{
    Build, BuildRequest, Builds, CallStats, CertificateMaterial, CertificateSummary, Certificates,
    CloudError, CloudProvider, CommandRequest, Deployment, DeploymentRequest, DeploymentStatus,
    Deployments, ErrorKind, Fleet, HttpListenerSpec, Instance, Invocation, Listener,
    ListenerAction, ListenerRule, ListenerSpec, LoadBalancer, LoadBalancing, ObjectHead,
    ObjectStorage, Page, RuleSpec, RunCommand, Tag, Target, TargetGroup, TargetGroupSpec,
    TargetHealth,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::cloud_calls::cloud_calls;
use crate::sim_protocol::{CALL_PATH, Call, REPLICA_HEADER, Reply};

/// A call that gets no answer in this time fails as transient, as a lost AWS response does.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// An idle connection older than this is closed rather than reused: the server drops idle
/// connections after its header timeout, and a request racing that drop would be lost.
const MAX_IDLE: Duration = Duration::from_secs(4);
/// Idle connections kept for reuse.
const POOL_SIZE: usize = 16;

/// Why the remote simulation's address was refused.
#[derive(Debug, thiserror::Error)]
#[error("simulated aws url {url:?} is not http://HOST:PORT")]
pub struct BadUrl {
    url: String,
}

/// The client of a remote simulated AWS; every region is served by the one account.
#[derive(Clone)]
pub struct RemoteSim {
    inner: Arc<Inner>,
}

struct Inner {
    /// `host:port` of the server.
    authority: String,
    replica: String,
    stats: CallStats,
    idle: Mutex<Vec<(SendRequest<Full<Bytes>>, Instant)>>,
}

/// The capabilities of one region, as handed out by [`RemoteSim`].
struct RegionClient {
    region: String,
    inner: Arc<Inner>,
}

impl RemoteSim {
    /// A client of the server at `url` (`http://HOST:PORT`), naming itself `replica`.
    pub fn new(url: &str, replica: &str) -> Result<Self, BadUrl> {
        let bad = || BadUrl {
            url: url.to_owned(),
        };
        let uri: http::Uri = url.parse().map_err(|_| bad())?;
        let authority = match (uri.scheme_str(), uri.authority()) {
            (Some("http"), Some(authority)) if authority.port().is_some() => authority,
            _ => return Err(bad()),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                authority: authority.to_string(),
                replica: replica.to_owned(),
                stats: CallStats::default(),
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    fn region(&self, region: &str) -> Arc<RegionClient> {
        Arc::new(RegionClient {
            region: region.to_owned(),
            inner: self.inner.clone(),
        })
    }
}

impl CloudProvider for RemoteSim {
    fn object_storage(&self, region: &str) -> Arc<dyn ObjectStorage> {
        self.region(region)
    }

    fn builds(&self, region: &str) -> Arc<dyn Builds> {
        self.region(region)
    }

    fn deployments(&self, region: &str) -> Arc<dyn Deployments> {
        self.region(region)
    }

    fn fleet(&self, region: &str) -> Arc<dyn Fleet> {
        self.region(region)
    }

    fn run_command(&self, region: &str) -> Arc<dyn RunCommand> {
        self.region(region)
    }

    fn load_balancing(&self, region: &str) -> Arc<dyn LoadBalancing> {
        self.region(region)
    }

    fn certificates(&self, region: &str) -> Arc<dyn Certificates> {
        self.region(region)
    }

    fn calls(&self) -> CallStats {
        self.inner.stats.clone()
    }
}

impl RegionClient {
    /// Posts one call and counts its outcome.
    async fn call<A, T>(&self, method: &'static str, args: A) -> Result<T, CloudError>
    where
        A: Serialize + Send,
        T: DeserializeOwned,
    {
        let call = Call {
            region: self.region.clone(),
            method: method.to_owned(),
            args,
        };
        let result = match tokio::time::timeout(CALL_TIMEOUT, self.inner.post(&call)).await {
            Ok(Ok(body)) => match serde_json::from_slice::<Reply<T>>(&body) {
                Ok(reply) => reply.into(),
                Err(error) => Err(failed(ErrorKind::Other, method, error)),
            },
            Ok(Err(error)) => Err(failed(ErrorKind::Transient, method, error)),
            Err(_) => Err(failed(ErrorKind::Transient, method, "no answer in time")),
        };
        self.inner.stats.observe(method, &result);
        result
    }
}

fn failed(kind: ErrorKind, method: &'static str, error: impl std::fmt::Display) -> CloudError {
    CloudError::new(kind, method, format!("remote simulated aws: {error}"))
}

impl Inner {
    /// Sends one call on a pooled or new connection and returns the answer's body.
    async fn post<A: Serialize>(&self, call: &Call<A>) -> Result<Bytes, String> {
        let body = serde_json::to_vec(call).map_err(|e| format!("encode the call: {e}"))?;
        let request = hyper::Request::post(CALL_PATH)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(REPLICA_HEADER, &self.replica)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("build the request: {e}"))?;
        let mut sender = self.connection().await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("read the answer: {e}"))?
            .to_bytes();
        self.give_back(sender);
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(format!("server answered {status}: {text}"));
        }
        Ok(body)
    }

    /// An idle connection that is still open and young enough, or a new one.
    async fn connection(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        loop {
            let pooled = self.idle.lock().map_or(None, |mut idle| idle.pop());
            match pooled {
                Some((mut sender, since)) if since.elapsed() < MAX_IDLE => {
                    if sender.ready().await.is_ok() {
                        return Ok(sender);
                    }
                }
                Some(_) => {}
                None => break,
            }
        }
        let stream = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| format!("connect to {}: {e}", self.authority))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(connection);
        Ok(sender)
    }

    fn give_back(&self, sender: SendRequest<Full<Bytes>>) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < POOL_SIZE
        {
            idle.push((sender, Instant::now()));
        }
    }
}

/// Implements each trait of the table by posting the call with its arguments in order.
macro_rules! client_impls {
    ($(
        $capability:ident : $trait:ident {
            $( $access:ident $method:ident ( $($arg:ident : $ty:ty),* $(,)? ) -> $ret:ty ; )*
        }
    )*) => {
        $(
            #[async_trait]
            impl $trait for RegionClient {
                $(
                    async fn $method(&self, $($arg: $ty),*) -> Result<$ret, CloudError> {
                        let method = concat!(stringify!($capability), ":", stringify!($method));
                        self.call(method, ($($arg,)*)).await
                    }
                )*
            }
        )*
    };
}

cloud_calls!(client_impls);
