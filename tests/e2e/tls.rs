//! The optional TLS listener, reached by `shopctl` trusting a private CA.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use shop_controller::config::TlsArgs;
use shop_controller::grpc::Auth;
use shop_controller::server;

use crate::support::{seeded, sqlite_store};

#[tokio::test(flavor = "multi_thread")]
async fn shopctl_talks_to_a_tls_server() {
    let dir = tempfile::tempdir().expect("dir");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key")).expect("ca");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("leaf params")
        .signed_by(&leaf_key, &ca)
        .expect("leaf");
    let write = |name: &str, pem: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).expect("write pem");
        path
    };
    let args = TlsArgs {
        tls_cert: Some(write("server.pem", leaf.pem())),
        tls_key: Some(write("server.key", leaf_key.serialize_pem())),
    };
    let ca_path = write("ca.pem", ca.pem());

    let store = sqlite_store().await;
    let aws = seeded(&store).await;
    let tls = server::load_tls(&args).expect("tls config");
    assert!(tls.is_some());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let services = server::services(store.store.clone(), Arc::new(aws), Auth::Disabled);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server::serve(
        listener,
        services,
        tls,
        async move {
            let _ = stopped.await;
        },
        Duration::from_secs(1),
    ));

    let url = format!("https://localhost:{port}");
    let run = move |ca: Option<std::path::PathBuf>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let mut command = Command::new(env!("CARGO_BIN_EXE_shopctl"));
            command.args(["--server", &url, "region", "list"]);
            if let Some(ca) = ca {
                command.arg("--ca-cert").arg(ca);
            }
            command.output().expect("run shopctl")
        })
    };
    let trusted = run(Some(ca_path)).await.expect("join");
    let stdout = String::from_utf8_lossy(&trusted.stdout);
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert!(stdout.contains("eu-west-1"), "{stdout}");

    let untrusted = run(None).await.expect("join");
    assert!(
        !untrusted.status.success(),
        "a server with an unknown CA was trusted"
    );

    let _ = stop.send(());
    serving.await.expect("join").expect("clean stop");
}
