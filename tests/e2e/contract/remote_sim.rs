//! The simulated AWS served over the remote sim protocol (`sim_server`) and reached through
//! its client (`RemoteSim`), as `serve --simulated-aws-url` replicas reach it: every contract
//! passing here as against the sim itself proves the protocol carries each call, its
//! arguments, results and errors intact.

use reconcilers::cloud::CloudProvider;
use shop_controller::aws::RemoteSim;
use shop_controller::sim_server;

use super::Backend;

pub(super) async fn backend() -> Backend {
    let (mut backend, aws) = super::sim::backend_and_account().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    // Served until the test's runtime ends.
    tokio::spawn(sim_server::serve(
        listener,
        aws,
        None,
        std::future::pending(),
    ));
    let remote = RemoteSim::new(&url, "contract").expect("url");
    let region = backend.region.clone();
    backend.object_storage = remote.object_storage(&region);
    backend.load_balancing = remote.load_balancing(&region);
    backend.certificates = remote.certificates(&region);
    backend.builds = remote.builds(&region);
    backend.deployments = remote.deployments(&region);
    backend.fleet = remote.fleet(&region);
    backend.run_command = remote.run_command(&region);
    backend
}
