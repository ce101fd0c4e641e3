//! A real `pebble-challtestsrv` as a mock DNS server: started on free ports, with its default
//! A and AAAA answers turned off (so an unknown name has no records at all), fed records over
//! its management API, and killed when dropped.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener as StdListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A running `pebble-challtestsrv` answering DNS (UDP and TCP) on `dns`.
pub struct ChallTestSrv {
    /// Where it answers DNS queries, over UDP and TCP.
    pub dns: SocketAddr,
    management: SocketAddr,
    child: Child,
}

impl ChallTestSrv {
    /// Starts one on free loopback ports and waits until both its DNS and management ports
    /// accept connections. A port taken between our probe and its bind is retried.
    pub async fn start() -> Self {
        for _ in 0..5 {
            if let Some(server) = Self::try_start().await {
                return server;
            }
        }
        panic!("pebble-challtestsrv did not start on free ports after 5 attempts");
    }

    async fn try_start() -> Option<Self> {
        let dns = SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_and_udp_port()));
        let management = SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_port()));
        let child = Command::new("pebble-challtestsrv")
            .args(["-dns01", &dns.to_string()])
            .args(["-management", &management.to_string()])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            // Without these, every name nobody mocked answers 127.0.0.1 and ::1.
            .args(["-defaultIPv4", "", "-defaultIPv6", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start pebble-challtestsrv ({e}); is pebble installed?"));
        let mut server = Self {
            dns,
            management,
            child,
        };

        for _ in 0..200 {
            if let Ok(Some(_)) = server.child.try_wait() {
                return None;
            }
            if accepts(dns).await && accepts(management).await {
                return Some(server);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("pebble-challtestsrv did not listen on {dns} and {management} in 5 s");
    }

    /// Answers A queries for `host` with `addresses` (replacing earlier ones).
    pub async fn add_a(&self, host: &str, addresses: &[Ipv4Addr]) {
        let addresses: Vec<String> = addresses.iter().map(ToString::to_string).collect();
        self.post("/add-a", json!({ "host": host, "addresses": addresses }))
            .await;
    }

    /// Answers AAAA queries for `host` with `addresses` (replacing earlier ones).
    pub async fn add_aaaa(&self, host: &str, addresses: &[Ipv6Addr]) {
        let addresses: Vec<String> = addresses.iter().map(ToString::to_string).collect();
        self.post("/add-aaaa", json!({ "host": host, "addresses": addresses }))
            .await;
    }

    /// Sets the CAA records (flags 0) of `host` to `policies` of (tag, value), such as
    /// (`issue`, `letsencrypt.org`). challtestsrv cannot set the critical flag.
    pub async fn add_caa(&self, host: &str, policies: &[(&str, &str)]) {
        let policies: Vec<Value> = policies
            .iter()
            .map(|(tag, value)| json!({ "tag": tag, "value": value }))
            .collect();
        self.post("/add-caa", json!({ "host": host, "policies": policies }))
            .await;
    }

    /// Makes `host` a CNAME to `target`. challtestsrv follows it one level: queries for
    /// `host` answer the CNAME and then `target`'s records of the asked type.
    pub async fn add_cname(&self, host: &str, target: &str) {
        self.post("/set-cname", json!({ "host": host, "target": target }))
            .await;
    }

    /// Makes every query for `host` answer SERVFAIL.
    pub async fn add_servfail(&self, host: &str) {
        self.post("/set-servfail", json!({ "host": host })).await;
    }

    /// Removes every mock record of `host`.
    pub async fn clear(&self, host: &str) {
        for path in [
            "/clear-a",
            "/clear-aaaa",
            "/clear-caa",
            "/clear-cname",
            "/clear-servfail",
        ] {
            self.post(path, json!({ "host": host })).await;
        }
    }

    /// One management call; challtestsrv answers 200 with an empty body on success.
    async fn post(&self, path: &str, body: Value) {
        let body = body.to_string();
        let mut stream = TcpStream::connect(self.management)
            .await
            .expect("connect to challtestsrv management");
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.management,
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send management request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("read management response");
        let status = response.lines().next().unwrap_or_default();
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "challtestsrv {path} {body}: {status}"
        );
    }
}

impl Drop for ChallTestSrv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn accepts(address: SocketAddr) -> bool {
    TcpStream::connect(address).await.is_ok()
}

fn free_tcp_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A port free for both TCP and UDP, since the DNS server binds both.
fn free_tcp_and_udp_port() -> u16 {
    loop {
        let port = free_tcp_port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

#[tokio::test]
async fn mock_records_are_served_and_unknown_names_have_none() {
    let server = ChallTestSrv::start().await;
    server
        .add_a("shop.example.test", &[Ipv4Addr::new(192, 0, 2, 1)])
        .await;
    server
        .add_aaaa("shop.example.test", &["2001:db8::1".parse().expect("ip")])
        .await;
    server
        .add_caa("example.test", &[("issue", "letsencrypt.org")])
        .await;
    server
        .add_cname("www.example.test", "shop.example.test")
        .await;

    assert_eq!(
        query_a(server.dns, "shop.example.test").await,
        vec![Ipv4Addr::new(192, 0, 2, 1)]
    );
    assert_eq!(
        query_a(server.dns, "www.example.test").await,
        vec![Ipv4Addr::new(192, 0, 2, 1)],
        "the CNAME is followed"
    );
    assert!(query_a(server.dns, "nobody.example.test").await.is_empty());

    server.clear("shop.example.test").await;
    assert!(query_a(server.dns, "shop.example.test").await.is_empty());
}

/// The A records of one UDP query, parsed just enough for the harness's own test.
async fn query_a(dns: SocketAddr, name: &str) -> Vec<Ipv4Addr> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        query.push(u8::try_from(label.len()).expect("short label"));
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    socket.send_to(&query, dns).await.expect("send query");
    let mut response = [0u8; 1500];
    let length = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut response))
        .await
        .expect("an answer in time")
        .expect("receive");
    let response = &response[..length];

    // Skip the header and the echoed question, then read each answer record.
    let answers = u16::from_be_bytes([response[6], response[7]]);
    let mut at = query.len();
    let mut addresses = Vec::new();
    for _ in 0..answers {
        at = skip_name(response, at);
        let kind = u16::from_be_bytes([response[at], response[at + 1]]);
        let data_length = usize::from(u16::from_be_bytes([response[at + 8], response[at + 9]]));
        let data = &response[at + 10..at + 10 + data_length];
        if kind == 1 {
            addresses.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + data_length;
    }
    addresses
}

fn skip_name(message: &[u8], mut at: usize) -> usize {
    loop {
        match message[at] {
            0 => return at + 1,
            pointer if pointer & 0xc0 == 0xc0 => return at + 2,
            length => at += 1 + usize::from(length),
        }
    }
}
