//! Starting and stopping the controller: open the store, pick the cloud, serve gRPC until a
//! shutdown signal, then give in-flight calls a grace period.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use reconcilers::cloud::CloudProvider;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Identity, ServerTlsConfig};

use crate::config::{AuthArgs, TlsArgs};
use crate::grpc::{self, Auth, Services};
use crate::intent::Intents;
use crate::store::Store;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("read {what} {path}")]
    Read {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid tokens")]
    Tokens(#[from] grpc::auth::TokensError),
    #[error("no tokens configured: give --tokens-file or --tokens, or --no-auth to accept anyone")]
    NoTokens,
    #[error("configure tls")]
    Tls(#[source] tonic::transport::Error),
    #[error("build reflection service")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("serve grpc")]
    Transport(#[source] tonic::transport::Error),
}

/// Loads tokens from the file or the inline value; authentication must be explicitly
/// disabled to run without them.
pub fn load_auth(args: &AuthArgs) -> Result<Auth, ServeError> {
    if args.no_auth {
        tracing::warn!("authentication is disabled: every caller may write");
        return Ok(Auth::Disabled);
    }
    let mut text = String::new();
    if let Some(path) = &args.tokens_file {
        text = std::fs::read_to_string(path).map_err(|source| ServeError::Read {
            what: "tokens file",
            path: path.display().to_string(),
            source,
        })?;
    }
    if let Some(inline) = &args.tokens {
        text.push('\n');
        text.push_str(inline.expose());
    }
    if text.trim().is_empty() {
        return Err(ServeError::NoTokens);
    }
    Ok(Auth::parse(&text)?)
}

/// Reads the TLS identity, when configured.
pub fn load_tls(args: &TlsArgs) -> Result<Option<ServerTlsConfig>, ServeError> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let read = |what, path: &std::path::PathBuf| {
        std::fs::read(path).map_err(|source| ServeError::Read {
            what,
            path: path.display().to_string(),
            source,
        })
    };
    let identity = Identity::from_pem(read("tls certificate", cert)?, read("tls key", key)?);
    Ok(Some(ServerTlsConfig::new().identity(identity)))
}

/// Builds the services over a store and a cloud.
pub fn services(store: Arc<dyn Store>, cloud: Arc<dyn CloudProvider>, auth: Auth) -> Services {
    Services {
        intents: Intents::new(store.clone(), cloud),
        store,
        auth,
        dev_cloud: None,
        planner: None,
        domains: None,
    }
}

/// Serves gRPC on `listener` until `shutdown` resolves, then lets in-flight calls finish for
/// at most `grace`.
pub async fn serve(
    listener: TcpListener,
    services: Services,
    tls: Option<ServerTlsConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Result<(), ServeError> {
    // One span per call, named by its method (a bounded set), so a call's events carry it.
    let mut builder = tonic::transport::Server::builder()
        .trace_fn(|request| tracing::info_span!("rpc", method = request.uri().path()));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).map_err(ServeError::Tls)?;
    }
    let router = grpc::router(builder, services).await?;
    let address = listener.local_addr().ok();
    tracing::info!(address = ?address, "serving grpc");

    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let serving =
        router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            shutdown.await;
            tracing::info!("shutting down: no new calls accepted");
            let _ = stopping_tx.send(());
        });
    tokio::pin!(serving);
    tokio::select! {
        result = &mut serving => return result.map_err(ServeError::Transport),
        _ = stopping_rx => {}
    }
    match tokio::time::timeout(grace, serving).await {
        Ok(result) => result.map_err(ServeError::Transport),
        Err(_) => {
            tracing::warn!(
                grace_seconds = grace.as_secs(),
                "grace period over; dropping open calls"
            );
            Ok(())
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for sigterm");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Serves gRPC and, when given, runs the controller's loops beside it until SIGTERM or Ctrl-C;
/// both stop together, each finishing in-flight work within its grace period.
pub async fn serve_and_reconcile(
    listener: TcpListener,
    services: Services,
    tls: Option<ServerTlsConfig>,
    controller: Option<Arc<crate::controller::Controller>>,
    grace: Duration,
) -> Result<(), ServeError> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let loops = controller.map(|c| tokio::spawn(c.run(until_stopped(stopped.clone()))));
    let served = serve(listener, services, tls, until_stopped(stopped), grace).await;
    if let Some(loops) = loops {
        let _ = loops.await;
    }
    served
}
