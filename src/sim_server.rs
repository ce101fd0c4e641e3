//! Serves a simulated AWS to other processes over the protocol of [`crate::sim_protocol`]: one
//! POST per cloud call, answered by the account in this process. `shop-controller dev
//! --share-sim` uses it so `serve` replicas can share the dev account; the multi-process
//! tests use it, with a [`Journal`], to see which replica changed what and when.
//!
//! Invariant: this is a development and test tool; it has no authentication and must listen
//! on loopback only.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use reconcilers::cloud::{
    BuildRequest, Builds, CertificateMaterial, Certificates, CloudProvider, CommandRequest,
    DeploymentRequest, DeploymentStatus, Deployments, Fleet, HttpListenerSpec, ListenerAction,
    ListenerSpec, LoadBalancing, ObjectStorage, RuleSpec, RunCommand, Tag, Target, TargetGroupSpec,
};
use reconcilers::sim::SimulatedAws;
use tokio::net::TcpListener;

use crate::cloud_calls::{cloud_calls, writes};
use crate::http::plain;
use crate::sim_protocol::{Arg, CALL_PATH, Call, REPLICA_HEADER, Reply};

/// Largest call accepted; an imported certificate is a few kilobytes.
const MAX_CALL_BYTES: usize = 4 * 1024 * 1024;

/// One call that changed (or tried to change) the account.
#[derive(Clone, Debug)]
pub struct Mutation {
    /// The caller's [`REPLICA_HEADER`], empty when it sent none.
    pub replica: String,
    /// `capability:method`, as in the protocol.
    pub method: String,
    pub args: serde_json::Value,
    /// The reply, `{"ok": ...}` or `{"err": ...}`.
    pub reply: serde_json::Value,
    /// When the server read the call, and when the account had answered it.
    pub received: Instant,
    pub answered: Instant,
}

impl Mutation {
    pub fn succeeded(&self) -> bool {
        self.reply.get("ok").is_some()
    }
}

/// Every mutation served, in the order they were answered.
#[derive(Debug, Default)]
pub struct Journal {
    mutations: Mutex<Vec<Mutation>>,
}

impl Journal {
    pub fn mutations(&self) -> Vec<Mutation> {
        self.mutations
            .lock()
            .map_or_else(|p| p.into_inner().clone(), |m| m.clone())
    }

    fn record(&self, mutation: Mutation) {
        let mut mutations = self.mutations.lock().unwrap_or_else(|p| p.into_inner());
        mutations.push(mutation);
    }
}

/// Why a call could not be dispatched.
#[derive(Debug, thiserror::Error)]
enum BadCall {
    #[error("no such call {0:?}")]
    UnknownMethod(String),
    #[error("arguments of {method}")]
    Arguments {
        method: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("encode the reply of {method}")]
    Reply {
        method: String,
        #[source]
        source: serde_json::Error,
    },
}

/// What one dispatched call gave: its reply, and whether it was a write.
struct Answered {
    reply: serde_json::Value,
    writes: bool,
}

/// Serves `aws` on `listener` until `shutdown` resolves, recording mutations in `journal`
/// when one is given.
pub async fn serve(
    listener: TcpListener,
    aws: Arc<SimulatedAws>,
    journal: Option<Arc<Journal>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let cloud: Arc<dyn CloudProvider> = Arc::new(aws);
    let handler = move |request: Request<Incoming>| {
        let cloud = cloud.clone();
        let journal = journal.clone();
        async move { answer(request, cloud, journal).await }
    };
    crate::http::serve(listener, "simulated aws", handler, shutdown).await;
}

async fn answer(
    request: Request<Incoming>,
    cloud: Arc<dyn CloudProvider>,
    journal: Option<Arc<Journal>>,
) -> Response<Full<Bytes>> {
    if request.method() != hyper::Method::POST || request.uri().path() != CALL_PATH {
        return plain(StatusCode::NOT_FOUND, "post calls to /v1/call\n");
    }
    let replica = request
        .headers()
        .get(REPLICA_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = match Limited::new(request.into_body(), MAX_CALL_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(error) => return plain(StatusCode::BAD_REQUEST, format!("read the call: {error}\n")),
    };
    let call: Call<serde_json::Value> = match serde_json::from_slice(&body) {
        Ok(call) => call,
        Err(error) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("decode the call: {error}\n"),
            );
        }
    };
    // AWS carries out a call it received even when the caller dies before the answer (a
    // killed controller process), and hyper drops this future when the connection goes: the
    // call runs in a task of its own, so a kill loses the answer, never the call.
    let carried = tokio::spawn(carry_out(cloud, journal, call, replica.clone()));
    let answered = match carried.await {
        Ok(Ok(answered)) => answered,
        Ok(Err(error)) => {
            tracing::warn!(%error, replica, "refused a simulated aws call");
            return plain(StatusCode::BAD_REQUEST, format!("{error}\n"));
        }
        Err(error) => {
            tracing::error!(%error, replica, "a simulated aws call failed");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n"));
        }
    };
    let mut response = plain(StatusCode::OK, answered.reply.to_string());
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Dispatches a call and journals it when it was a write.
async fn carry_out(
    cloud: Arc<dyn CloudProvider>,
    journal: Option<Arc<Journal>>,
    call: Call<serde_json::Value>,
    replica: String,
) -> Result<Answered, BadCall> {
    let received = Instant::now();
    let method = call.method.clone();
    let args = journal.as_ref().map(|_| call.args.clone());
    let answered = dispatch(cloud.as_ref(), call).await?;
    if let (Some(journal), Some(args), true) = (journal, args, answered.writes) {
        journal.record(Mutation {
            replica,
            method,
            args,
            reply: answered.reply.clone(),
            received,
            answered: Instant::now(),
        });
    }
    Ok(answered)
}

/// Decodes a call's arguments, calls the trait method and encodes its result.
macro_rules! server_dispatch {
    ($(
        $capability:ident : $trait:ident {
            $( $access:ident $method:ident ( $($arg:ident : $ty:ty),* $(,)? ) -> $ret:ty ; )*
        }
    )*) => {
        async fn dispatch(
            cloud: &dyn CloudProvider,
            call: Call<serde_json::Value>,
        ) -> Result<Answered, BadCall> {
            match call.method.as_str() {
                $($(
                    concat!(stringify!($capability), ":", stringify!($method)) => {
                        let ($($arg,)*): ($(<$ty as Arg<'_>>::Owned,)*) =
                            serde_json::from_value(call.args).map_err(|source| {
                                BadCall::Arguments { method: call.method.clone(), source }
                            })?;
                        let service: Arc<dyn $trait> = cloud.$capability(&call.region);
                        let result = service.$method($(<$ty as Arg<'_>>::lend(&$arg)),*).await;
                        let reply = serde_json::to_value(Reply::from(result)).map_err(
                            |source| BadCall::Reply { method: call.method.clone(), source },
                        )?;
                        Ok(Answered { reply, writes: writes!($access) })
                    }
                )*)*
                other => Err(BadCall::UnknownMethod(other.to_owned())),
            }
        }
    };
}

cloud_calls!(server_dispatch);

#[cfg(test)]
mod tests {
    use reconcilers::sim::SimConfig;
    use serde_json::json;

    use super::*;

    fn call(method: &str, args: serde_json::Value) -> Call<serde_json::Value> {
        Call {
            region: "eu-west-1".to_owned(),
            method: method.to_owned(),
            args,
        }
    }

    #[tokio::test]
    async fn unknown_calls_and_bad_arguments_are_refused_and_writes_are_marked() {
        let cloud = Arc::new(SimulatedAws::with_config(SimConfig::manual()));
        let cloud: &dyn CloudProvider = &cloud;

        let unknown = dispatch(cloud, call("load_balancing:delete_everything", json!(null))).await;
        assert!(matches!(unknown, Err(BadCall::UnknownMethod(_))));
        let bad = dispatch(cloud, call("fleet:running_instances", json!([1, 2]))).await;
        assert!(matches!(bad, Err(BadCall::Arguments { .. })));

        let read = dispatch(cloud, call("fleet:running_instances", json!(["shops-a"]))).await;
        let read = read.expect("dispatched");
        assert_eq!(read.reply, json!({ "ok": [] }));
        assert!(!read.writes);
        let write = dispatch(
            cloud,
            call("load_balancing:delete_listener", json!(["arn:x"])),
        );
        let write = write.await.expect("dispatched");
        assert!(write.writes);
        assert_eq!(write.reply["err"]["kind"], "NotFound", "{}", write.reply);
    }
}
