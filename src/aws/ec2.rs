//! [`Fleet`] over EC2's Query API, without aws-sdk-ec2: that crate alone is about half of a
//! clean build, and the controller needs one read (`DescribeInstances`). Requests are form
//! POSTs signed with SigV4 from the shared credentials; responses are XML.
//!
//! [`Ec2Client::query`] makes any other EC2 call; tests use it to arrange VPCs and instances
//! on the emulator.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_http_client::{Connector, tls};
use aws_smithy_runtime_api::client::http::HttpConnector;
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;
use aws_smithy_xml::decode::{Document, ScopedDecoder, try_data};
use reconcilers::cloud::{CloudError, ErrorKind, Fleet, Instance};
use tracing::warn;

use super::calls::{Calls, all_pages};
use super::error::kind_of;

/// The EC2 Query API version these requests are written against.
const API_VERSION: &str = "2016-11-15";

/// Page size of `DescribeInstances` (AWS allows 5 to 1000).
const PAGE_SIZE: &str = "1000";

/// One attempt, from connecting to the last byte of the response.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);

/// Operation names of the actions this client makes; every other action is counted and rate
/// limited as `ec2:Other`.
const OPERATIONS: &[&str] = &[
    "ec2:DescribeInstances",
    "ec2:RunInstances",
    "ec2:TerminateInstances",
    "ec2:CreateTags",
    "ec2:CreateVpc",
    "ec2:DescribeVpcs",
    "ec2:DeleteVpc",
    "ec2:CreateSubnet",
    "ec2:DescribeSubnets",
    "ec2:DeleteSubnet",
    "ec2:DescribeImages",
];

/// Everything the client needs besides the connection: where and as whom to call.
#[derive(Clone, Debug)]
pub(crate) struct Ec2Settings {
    pub(crate) region: String,
    /// `https://ec2.{region}.amazonaws.com` unless an emulator's URL is configured.
    pub(crate) endpoint: String,
    pub(crate) credentials: Option<SharedCredentialsProvider>,
    pub(crate) max_attempts: u32,
}

/// An EC2 Query API client of one region.
pub struct Ec2Client {
    settings: Ec2Settings,
    connector: Connector,
    calls: Arc<Calls>,
}

/// One page of running instances and the token of the next.
#[derive(Debug, Default, PartialEq, Eq)]
struct InstancePage {
    instances: Vec<Instance>,
    next_token: Option<String>,
}

impl Ec2Client {
    pub(crate) fn new(settings: Ec2Settings, calls: Arc<Calls>) -> Self {
        let connector = Connector::builder()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build();
        Self {
            settings,
            connector,
            calls,
        }
    }

    /// Calls an EC2 action with Query parameters (`Filter.1.Name`, `TagSpecification.1...`)
    /// and returns the XML response. Rate limited and counted like every other call.
    pub async fn query(
        &self,
        action: &'static str,
        params: &[(&str, &str)],
    ) -> Result<String, CloudError> {
        let operation = operation_of(action);
        let body = form_body(action, params);
        self.calls
            .run(operation, self.send_with_retries(operation, body))
            .await
    }

    async fn send_with_retries(
        &self,
        operation: &'static str,
        body: String,
    ) -> Result<String, CloudError> {
        let attempts = self.settings.max_attempts.max(1);
        let mut backoff = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            crate::fencing::check_send(operation)?;
            let error = match self.send(operation, &body).await {
                Ok(xml) => return Ok(xml),
                Err(error) => error,
            };
            let retryable = matches!(error.kind, ErrorKind::Throttled | ErrorKind::Transient);
            if !retryable || attempt >= attempts {
                return Err(error);
            }
            warn!(operation, attempt, error = %error.message, "retrying ec2 call");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
            attempt += 1;
        }
    }

    /// One signed POST.
    async fn send(&self, operation: &'static str, body: &str) -> Result<String, CloudError> {
        let error = |kind, message: String| CloudError::new(kind, operation, message);
        let identity = self
            .identity()
            .await
            .map_err(|e| error(ErrorKind::Transient, e))?;
        let request = self
            .signed_request(body, &identity)
            .map_err(|e| error(ErrorKind::Invalid, e))?;

        let response = tokio::time::timeout(ATTEMPT_TIMEOUT, async {
            let response = self.connector.call(request).await?;
            let status = response.status().as_u16();
            let bytes = ByteStream::new(response.into_body()).collect().await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, bytes.into_bytes()))
        })
        .await;
        let (status, bytes) = match response {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => return Err(error(ErrorKind::Transient, format!("send: {e}"))),
            Err(_) => return Err(error(ErrorKind::Transient, "timed out".to_owned())),
        };

        let text = String::from_utf8_lossy(&bytes).into_owned();
        if (200..300).contains(&status) {
            return Ok(text);
        }
        Err(error_of_response(operation, status, &text))
    }

    async fn identity(&self) -> Result<Identity, String> {
        let provider = self
            .settings
            .credentials
            .as_ref()
            .ok_or("no aws credentials configured")?;
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|e| format!("resolve credentials: {e}"))?;
        Ok(credentials.into())
    }

    fn signed_request(
        &self,
        body: &str,
        identity: &Identity,
    ) -> Result<aws_smithy_runtime_api::http::Request, String> {
        let mut request = http::Request::post(&self.settings.endpoint)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(SdkBody::from(body.to_owned()))
            .map_err(|e| format!("build request: {e}"))?;
        let host = request
            .uri()
            .authority()
            .map(|authority| authority.as_str().to_owned())
            .ok_or_else(|| format!("endpoint {} has no host", self.settings.endpoint))?;
        let host = http::HeaderValue::from_str(&host).map_err(|e| format!("host: {e}"))?;
        request.headers_mut().insert(http::header::HOST, host);

        let params = v4::SigningParams::builder()
            .identity(identity)
            .region(&self.settings.region)
            .name("ec2")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| format!("signing parameters: {e}"))?
            .into();
        let headers = request
            .headers()
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)));
        let signable = SignableRequest::new(
            "POST",
            &self.settings.endpoint,
            headers,
            SignableBody::Bytes(body.as_bytes()),
        )
        .map_err(|e| format!("signable request: {e}"))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| format!("sign: {e}"))?
            .into_parts();
        instructions.apply_to_request_http1x(&mut request);
        request
            .try_into()
            .map_err(|e| format!("convert request: {e}"))
    }

    async fn running_page(
        &self,
        name: &str,
        next_token: Option<&str>,
    ) -> Result<InstancePage, CloudError> {
        let mut params = vec![
            ("Filter.1.Name", "tag:Name"),
            ("Filter.1.Value.1", name),
            ("Filter.2.Name", "instance-state-name"),
            ("Filter.2.Value.1", "running"),
            ("MaxResults", PAGE_SIZE),
        ];
        if let Some(token) = next_token {
            params.push(("NextToken", token));
        }
        let xml = self.query("DescribeInstances", &params).await?;
        parse_instances(&xml)
            .map_err(|message| CloudError::new(ErrorKind::Other, "ec2:DescribeInstances", message))
    }
}

impl std::fmt::Debug for Ec2Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ec2Client")
            .field("region", &self.settings.region)
            .field("endpoint", &self.settings.endpoint)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Fleet for Ec2Client {
    async fn running_instances(&self, name: &str) -> Result<Vec<Instance>, CloudError> {
        let mut instances = all_pages(|next_token| async move {
            let page = self.running_page(name, next_token.as_deref()).await?;
            Ok((page.instances, page.next_token))
        })
        .await?;
        instances.sort();
        instances.dedup();
        Ok(instances)
    }
}

/// The default endpoint of a region.
pub(crate) fn endpoint_of(region: &str) -> String {
    format!("https://ec2.{region}.amazonaws.com/")
}

fn operation_of(action: &str) -> &'static str {
    OPERATIONS
        .iter()
        .find(|operation| operation.strip_prefix("ec2:") == Some(action))
        .copied()
        .unwrap_or("ec2:Other")
}

/// `Action=...&Version=...&name=value...`, percent-encoded as AWS's Query protocol wants.
fn form_body(action: &str, params: &[(&str, &str)]) -> String {
    let mut body = String::new();
    let mut writer = aws_smithy_query::QueryWriter::new(&mut body, action, API_VERSION);
    for (name, value) in params {
        writer.prefix(name).string(value);
    }
    writer.finish();
    body
}

/// Classifies a non-2xx response: EC2 writes `Response/Errors/Error/{Code,Message}`; anything
/// else (an emulator's HTML error page) is judged by its status alone.
fn error_of_response(operation: &'static str, status: u16, body: &str) -> CloudError {
    match parse_error(body) {
        Some((code, message)) => {
            let kind = kind_of(operation, Some(&code), Some(status));
            CloudError::new(kind, operation, format!("{code}: {message}"))
        }
        None => {
            let snippet: String = body.chars().take(200).collect();
            let snippet = snippet.split_whitespace().collect::<Vec<_>>().join(" ");
            let message = format!("http status {status}: {snippet}");
            CloudError::new(kind_of(operation, None, Some(status)), operation, message)
        }
    }
}

/// The code and message of the first `Error` element anywhere in the body.
fn parse_error(body: &str) -> Option<(String, String)> {
    let mut document = Document::new(body);
    while let Some(start) = document.next_start_element() {
        if !start.matches("Error") {
            continue;
        }
        let mut error = document.scoped_to(start);
        let (mut code, mut message) = (None, String::new());
        while let Some(mut tag) = error.next_tag() {
            if tag.start_el().matches("Code") {
                code = try_data(&mut tag).ok().map(|c| c.into_owned());
            } else if tag.start_el().matches("Message") {
                message = try_data(&mut tag).ok()?.into_owned();
            }
        }
        return code.filter(|c| !c.is_empty()).map(|c| (c, message));
    }
    None
}

/// Reads `reservationSet/item/instancesSet/item` and `nextToken` of a `DescribeInstances`
/// response.
fn parse_instances(xml: &str) -> Result<InstancePage, String> {
    let mut document = Document::new(xml);
    let mut root = document
        .root_element()
        .map_err(|e| format!("parse response: {e}"))?;
    let mut page = InstancePage::default();
    while let Some(mut tag) = root.next_tag() {
        if tag.start_el().matches("reservationSet") {
            while let Some(mut reservation) = tag.next_tag() {
                read_reservation(&mut reservation, &mut page.instances)?;
            }
        } else if tag.start_el().matches("nextToken") {
            let token = data(&mut tag)?;
            page.next_token = Some(token).filter(|t| !t.is_empty());
        }
    }
    Ok(page)
}

fn read_reservation(
    reservation: &mut ScopedDecoder<'_, '_>,
    instances: &mut Vec<Instance>,
) -> Result<(), String> {
    while let Some(mut tag) = reservation.next_tag() {
        if tag.start_el().matches("instancesSet") {
            while let Some(mut item) = tag.next_tag() {
                instances.push(read_instance(&mut item)?);
            }
        }
    }
    Ok(())
}

/// One `instancesSet/item`. Only direct children count: network interfaces nest their own
/// `privateIpAddress`.
fn read_instance(item: &mut ScopedDecoder<'_, '_>) -> Result<Instance, String> {
    let mut instance = Instance {
        id: String::new(),
        private_ip: None,
        availability_zone: None,
    };
    while let Some(mut tag) = item.next_tag() {
        if tag.start_el().matches("instanceId") {
            instance.id = data(&mut tag)?;
        } else if tag.start_el().matches("privateIpAddress") {
            instance.private_ip = Some(data(&mut tag)?).filter(|ip| !ip.is_empty());
        } else if tag.start_el().matches("placement") {
            while let Some(mut field) = tag.next_tag() {
                if field.start_el().matches("availabilityZone") {
                    instance.availability_zone = Some(data(&mut field)?);
                }
            }
        }
    }
    if instance.id.is_empty() {
        return Err("instance without instanceId".to_owned());
    }
    Ok(instance)
}

fn data(tag: &mut ScopedDecoder<'_, '_>) -> Result<String, String> {
    try_data(tag)
        .map(|text| text.trim().to_owned())
        .map_err(|e| format!("parse response: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>59dbff89-35bd-4eac-99ed-be587EXAMPLE</requestId>
  <reservationSet>
    <item>
      <reservationId>r-1</reservationId>
      <instancesSet>
        <item>
          <instanceId>i-0b</instanceId>
          <instanceState><code>16</code><name>running</name></instanceState>
          <placement><availabilityZone>eu-west-1b</availabilityZone><tenancy>default</tenancy></placement>
          <networkInterfaceSet>
            <item><privateIpAddress>10.0.9.9</privateIpAddress></item>
          </networkInterfaceSet>
          <privateIpAddress>10.0.1.2</privateIpAddress>
          <tagSet><item><key>Name</key><value>proxy</value></item></tagSet>
        </item>
        <item>
          <instanceId>i-0a</instanceId>
          <placement><availabilityZone>eu-west-1a</availabilityZone></placement>
        </item>
      </instancesSet>
    </item>
    <item>
      <reservationId>r-2</reservationId>
      <instancesSet/>
    </item>
  </reservationSet>
  <nextToken>eyJ2IjoiMiJ9</nextToken>
</DescribeInstancesResponse>"#;

    #[test]
    fn describe_instances_page_is_read_with_its_token() {
        let page = parse_instances(PAGE).expect("parses");

        assert_eq!(page.next_token.as_deref(), Some("eyJ2IjoiMiJ9"));
        assert_eq!(
            page.instances,
            vec![
                Instance {
                    id: "i-0b".to_owned(),
                    private_ip: Some("10.0.1.2".to_owned()),
                    availability_zone: Some("eu-west-1b".to_owned()),
                },
                Instance {
                    id: "i-0a".to_owned(),
                    private_ip: None,
                    availability_zone: Some("eu-west-1a".to_owned()),
                },
            ]
        );
    }

    #[test]
    fn last_page_has_no_token() {
        let cases = [
            "<DescribeInstancesResponse><reservationSet/></DescribeInstancesResponse>",
            "<DescribeInstancesResponse><reservationSet/><nextToken/></DescribeInstancesResponse>",
            "<DescribeInstancesResponse><nextToken></nextToken></DescribeInstancesResponse>",
        ];
        for xml in cases {
            assert_eq!(parse_instances(xml), Ok(InstancePage::default()), "{xml}");
        }
    }

    #[test]
    fn error_bodies_are_classified() {
        let throttled = r#"<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>ab</RequestID></Response>"#;
        let invalid = "<Response><Errors><Error><Code>InvalidParameterValue</Code>\
            <Message>bad filter &amp; value</Message></Error></Errors></Response>";
        let not_found = "<ErrorResponse><Error><Type>Sender</Type>\
            <Code>InvalidVpcID.NotFound</Code><Message>no vpc</Message></Error></ErrorResponse>";
        let html = "<!DOCTYPE HTML>\n<html><title>500 Internal Server Error</title><p>oops";
        let cases = [
            (
                throttled,
                503,
                ErrorKind::Throttled,
                "RequestLimitExceeded: Request limit exceeded.",
            ),
            (
                invalid,
                400,
                ErrorKind::Invalid,
                "InvalidParameterValue: bad filter & value",
            ),
            (
                not_found,
                400,
                ErrorKind::NotFound,
                "InvalidVpcID.NotFound: no vpc",
            ),
            (
                html,
                500,
                ErrorKind::Transient,
                "http status 500: <!DOCTYPE HTML>",
            ),
            ("", 502, ErrorKind::Transient, "http status 502: "),
            ("not xml", 403, ErrorKind::Other, "http status 403: not xml"),
        ];
        for (body, status, kind, message) in cases {
            let error = error_of_response("ec2:DescribeInstances", status, body);
            assert_eq!(error.kind, kind, "{body}");
            assert!(error.message.starts_with(message), "{}", error.message);
        }
    }

    #[test]
    fn form_body_encodes_every_parameter() {
        let body = form_body(
            "DescribeInstances",
            &[
                ("Filter.1.Name", "tag:Name"),
                ("Filter.1.Value.1", "proxy fleet/a&b=c"),
                ("NextToken", "ab+/=="),
            ],
        );
        assert_eq!(
            body,
            "Action=DescribeInstances&Version=2016-11-15\
             &Filter.1.Name=tag%3AName\
             &Filter.1.Value.1=proxy%20fleet%2Fa%26b%3Dc\
             &NextToken=ab%2B%2F%3D%3D"
        );
    }

    #[test]
    fn actions_have_bounded_operation_names() {
        assert_eq!(operation_of("DescribeInstances"), "ec2:DescribeInstances");
        assert_eq!(operation_of("CreateVpc"), "ec2:CreateVpc");
        assert_eq!(operation_of("AttachVolume"), "ec2:Other");
    }

    #[test]
    fn signed_request_carries_sigv4_headers() {
        let credentials = aws_credential_types::Credentials::new("AKID", "SECRET", None, None, "t");
        let settings = Ec2Settings {
            region: "eu-west-1".to_owned(),
            endpoint: "http://127.0.0.1:5999/".to_owned(),
            credentials: None,
            max_attempts: 1,
        };
        let calls = Arc::new(Calls::new(Default::default(), Default::default()));
        let client = Ec2Client::new(settings, calls);

        let request = client
            .signed_request("Action=DescribeInstances", &credentials.into())
            .expect("signs");

        let header = |name: &str| request.headers().get(name).map(str::to_owned);
        assert_eq!(header("host").as_deref(), Some("127.0.0.1:5999"));
        let authorization = header("authorization").expect("signed");
        assert!(
            authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKID/"),
            "{authorization}"
        );
        assert!(authorization.contains("/eu-west-1/ec2/aws4_request"));
        assert!(authorization.contains("SignedHeaders=content-type;host;x-amz-date"));
        assert!(header("x-amz-date").is_some());
        assert_eq!(request.method(), "POST");
    }
}
