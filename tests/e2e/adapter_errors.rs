//! Error classification through the real SDK adapters, over the wire: a local HTTP server
//! answers with the error documents AWS sends for throttling and full quotas (moto cannot be
//! made to), and the adapters must turn them into the bounded kinds.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use reconcilers::cloud::{
    CertificateMaterial, CloudProvider, DeploymentRequest, ErrorKind, ListenerSpec, Quota, Revision,
};
use shop_controller::aws::{AwsCloud, AwsOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves the same response to every request.
async fn canned(status: &'static str, headers: &'static str, body: &'static str) -> String {
    counted(status, headers, body).await.0
}

/// Like [`canned`], also counting the requests served.
async fn counted(
    status: &'static str,
    headers: &'static str,
    body: &'static str,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let requests = Arc::new(AtomicUsize::new(0));
    let served = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let served = served.clone();
            tokio::spawn(async move {
                read_request(&mut socket).await;
                served.fetch_add(1, Ordering::SeqCst);
                let response = format!(
                    "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    (format!("http://{address}"), requests)
}

/// Reads one request: headers, then as many body bytes as Content-Length says.
async fn read_request(socket: &mut tokio::net::TcpStream) {
    let mut data = Vec::new();
    let mut buffer = [0_u8; 4096];
    loop {
        let Ok(read) = socket.read(&mut buffer).await else {
            return;
        };
        if read == 0 {
            return;
        }
        data.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&data);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(str::to_owned)
                })
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                return;
            }
        }
    }
}

async fn cloud(endpoint: String) -> Arc<AwsCloud> {
    cloud_with_attempts(endpoint, 1).await
}

async fn cloud_with_attempts(endpoint: String, max_attempts: u32) -> Arc<AwsCloud> {
    let options = AwsOptions {
        endpoint_url: Some(endpoint),
        max_attempts,
        ..Default::default()
    };
    Arc::new(AwsCloud::load(options).await)
}

fn elb_error(code: &'static str) -> &'static str {
    match code {
        "Throttling" => {
            "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>1</RequestId></ErrorResponse>"
        }
        _ => {
            "<ErrorResponse><Error><Type>Sender</Type><Code>TooManyListeners</Code><Message>You've reached the limit on the number of listeners per load balancer</Message></Error><RequestId>1</RequestId></ErrorResponse>"
        }
    }
}

#[tokio::test]
async fn elb_throttling_is_throttled_and_counted() {
    let endpoint = canned(
        "400 Bad Request",
        "Content-Type: text/xml\r\n",
        elb_error("Throttling"),
    )
    .await;
    let cloud = cloud(endpoint).await;
    let error = cloud
        .load_balancing("us-east-1")
        .describe_listeners(
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/a/1",
        )
        .await
        .expect_err("throttled");
    assert_eq!(error.kind, ErrorKind::Throttled, "{error}");
    let throttled = cloud
        .calls()
        .snapshot()
        .into_iter()
        .any(|((_, operation, outcome), n)| {
            operation == "DescribeListeners" && outcome == "throttled" && n == 1
        });
    assert!(throttled, "{:?}", cloud.calls().snapshot());
}

#[tokio::test]
async fn a_full_nlb_is_a_listener_quota() {
    let endpoint = canned(
        "400 Bad Request",
        "Content-Type: text/xml\r\n",
        elb_error("TooManyListeners"),
    )
    .await;
    let spec = ListenerSpec {
        load_balancer_arn:
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/a/1".to_owned(),
        port: 20000,
        protocol: "TCP".to_owned(),
        target_group_arn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/t/1"
            .to_owned(),
        tags: Vec::new(),
    };
    let error = cloud(endpoint)
        .await
        .load_balancing("us-east-1")
        .create_listener(&spec)
        .await;
    assert_eq!(
        error.expect_err("full").kind,
        ErrorKind::QuotaExceeded(Quota::ListenersPerLoadBalancer)
    );
}

#[tokio::test]
async fn json_protocol_quota_errors_are_classified() {
    let acm = canned(
        "400 Bad Request",
        "Content-Type: application/x-amz-json-1.1\r\nx-amzn-ErrorType: LimitExceededException\r\n",
        r#"{"__type":"LimitExceededException","message":"the certificate limit is reached"}"#,
    )
    .await;
    let material = CertificateMaterial {
        certificate_pem: "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".to_owned(),
        private_key_pem: "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n".to_owned(),
        chain_pem: String::new(),
    };
    let error = cloud(acm)
        .await
        .certificates("us-east-1")
        .import_certificate(&material, None, &[])
        .await;
    assert_eq!(
        error.expect_err("full").kind,
        ErrorKind::QuotaExceeded(Quota::Certificates)
    );

    let codedeploy = canned(
        "400 Bad Request",
        "Content-Type: application/x-amz-json-1.1\r\n",
        r#"{"__type":"DeploymentLimitExceededException","message":"deployment group busy"}"#,
    )
    .await;
    let request = DeploymentRequest {
        application: "shops".to_owned(),
        deployment_group: "shops-a".to_owned(),
        revision: Revision {
            bucket: "b".to_owned(),
            key: "k.zip".to_owned(),
            version: None,
        },
        description: String::new(),
    };
    let error = cloud(codedeploy)
        .await
        .deployments("us-east-1")
        .create_deployment(&request)
        .await;
    assert_eq!(
        error.expect_err("busy").kind,
        ErrorKind::QuotaExceeded(Quota::ConcurrentDeployments)
    );
}

#[tokio::test]
async fn an_html_server_error_is_transient() {
    let endpoint = canned(
        "500 Internal Server Error",
        "Content-Type: text/html\r\n",
        "<html><body>oops</body></html>",
    )
    .await;
    let error = cloud(endpoint)
        .await
        .run_command("us-east-1")
        .invocations("4b1f")
        .await;
    assert_eq!(error.expect_err("500").kind, ErrorKind::Transient);
}

#[tokio::test]
async fn the_sdk_retries_throttling_but_never_a_full_quota() {
    let json = "Content-Type: application/x-amz-json-1.1\r\n";
    let (quota, quota_requests) = counted(
        "400 Bad Request",
        json,
        r#"{"__type":"LimitExceededException","message":"full"}"#,
    )
    .await;
    let error = cloud_with_attempts(quota, 3)
        .await
        .certificates("us-east-1")
        .list_certificates()
        .await;
    assert_eq!(
        error.expect_err("full").kind,
        ErrorKind::QuotaExceeded(Quota::Certificates)
    );
    assert_eq!(
        quota_requests.load(Ordering::SeqCst),
        1,
        "a full quota was retried"
    );

    let (throttled, throttled_requests) = counted(
        "400 Bad Request",
        json,
        r#"{"__type":"ThrottlingException","message":"slow"}"#,
    )
    .await;
    let error = cloud_with_attempts(throttled, 3)
        .await
        .certificates("us-east-1")
        .list_certificates()
        .await;
    assert_eq!(error.expect_err("throttled").kind, ErrorKind::Throttled);
    assert_eq!(
        throttled_requests.load(Ordering::SeqCst),
        3,
        "throttling is retried by the sdk"
    );
}
