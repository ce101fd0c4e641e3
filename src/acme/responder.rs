//! The HTTP-01 responder: answers `GET /.well-known/acme-challenge/<token>` with the token's
//! key authorization from the store, so any replica answers for an order any replica placed.
//! The proxy ALB's port-80 rule (the region's challenge listener) forwards the CA's requests
//! here. Probe tokens (`shop-controller-probe-*`) are answered with a fixed body without the
//! store: the self-check uses them to see that a domain leads here before any order exists.

use std::future::Future;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use reconcilers::domain_check::{PROBE_BODY, PROBE_TOKEN_PREFIX};
use tokio::net::TcpListener;

use crate::http::plain;
use crate::store::{Store, now_millis};

/// Where tokens are asked for.
const CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

/// Serves challenges from `store` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    store: Arc<dyn Store>,
    shutdown: impl Future<Output = ()>,
) {
    let handler = move |request: Request<Incoming>| {
        let store = store.clone();
        async move { respond(store.as_ref(), &request).await }
    };
    crate::http::serve(listener, "acme_responder", handler, shutdown).await;
}

async fn respond(store: &dyn Store, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    let path = request.uri().path();
    if path == "/healthz" {
        return plain(StatusCode::OK, "ok\n");
    }
    let Some(token) = path.strip_prefix(CHALLENGE_PATH) else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    // Tokens are base64url; anything else is no token of ours.
    if token.is_empty()
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return plain(StatusCode::NOT_FOUND, "no such token\n");
    }
    if token.starts_with(PROBE_TOKEN_PREFIX) {
        return plain(StatusCode::OK, PROBE_BODY);
    }
    match store.challenge_response(token, now_millis()).await {
        Ok(Some(key_authorization)) => {
            tracing::debug!(token, "answered an http-01 challenge");
            plain(StatusCode::OK, key_authorization)
        }
        Ok(None) => plain(StatusCode::NOT_FOUND, "no such token\n"),
        Err(error) => {
            tracing::warn!(%error, "could not read a challenge token");
            plain(StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n")
        }
    }
}

/// Forgets challenges past their expiry every `every` until `shutdown` resolves: orders end
/// by removing their own, so this only clears what a crash left behind.
pub async fn purge_expired(
    store: Arc<dyn Store>,
    every: std::time::Duration,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(every) => {}
        }
        match store.purge_expired_challenges(now_millis()).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "purged expired challenges"),
            Err(error) => tracing::warn!(%error, "could not purge expired challenges"),
        }
    }
}
