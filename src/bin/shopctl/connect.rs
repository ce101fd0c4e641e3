//! The connection to the controller: the channel, TLS with an optional CA certificate, and
//! the bearer token every request carries. What is sent over it belongs to `main`.

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

use crate::CliError;
use crate::cli::Cli;

#[derive(Clone)]
pub(crate) struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub(crate) type Authed = InterceptedService<Channel, Bearer>;

pub(crate) async fn connect(cli: &Cli) -> Result<(Channel, Bearer), CliError> {
    let connect_error = |source| CliError::Connect {
        server: cli.server.clone(),
        source,
    };
    let mut endpoint = Endpoint::from_shared(cli.server.clone()).map_err(connect_error)?;
    if cli.server.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_enabled_roots();
        if let Some(path) = &cli.ca_cert {
            let pem = std::fs::read(path)
                .map_err(|e| CliError::Input(format!("read {}: {e}", path.display())))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls).map_err(connect_error)?;
    }
    let channel = endpoint.connect().await.map_err(connect_error)?;
    let bearer = match &cli.token {
        Some(token) => Some(format!("Bearer {token}").parse().map_err(|_| {
            CliError::Input("the token has characters a header cannot carry".into())
        })?),
        None => None,
    };
    Ok((channel, Bearer(bearer)))
}
