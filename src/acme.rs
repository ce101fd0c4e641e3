//! The ACME CA (Let's Encrypt, or pebble in tests) through instant-acme: the account, created
//! once per CA directory and shared by every replica through the store (its key sealed with
//! the controller's ACME encryption key), and the [`Acme`] calls the certificate kind makes.
//! `responder` answers the CA's HTTP-01 requests from the store.
//!
//! A finalized order's private key lives only in this process until its certificate is
//! downloaded (normally within the same call); a crash in between costs one new order, never a
//! key in the store.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeStatus,
    ChallengeType, Identifier, NewAccount, NewOrder, Order,
};
use reconcilers::Hostname;
use reconcilers::certificate::split_pem_chain;
use reconcilers::cloud::{
    Acme, AcmeOrder, CertificateMaterial, CloudError, ErrorKind, Http01Challenge,
    IssuedCertificate, OrderStatus, RenewalWindow,
};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::config::Secret;
use crate::store::{Store, StoreError, now_millis};

pub mod responder;

/// How long `finalize` waits for the CA to issue before answering "ask again later".
const ISSUE_WAIT: Duration = Duration::from_secs(10);
const ISSUE_POLL: Duration = Duration::from_millis(250);

/// Where the CA is and how to reach it.
#[derive(Clone, Debug)]
pub struct AcmeConfig {
    /// The CA's directory, such as Let's Encrypt's
    /// `https://acme-v02.api.letsencrypt.org/directory`.
    pub directory_url: String,
    /// A PEM root to trust for the CA's own HTTPS (a test CA such as pebble); else the
    /// platform's roots.
    pub ca_root: Option<PathBuf>,
    /// Contact URIs of the account (`mailto:ops@example.com`).
    pub contacts: Vec<String>,
    /// 32 bytes, base64: seals the account key in the store.
    pub encryption_key: Secret,
}

/// Why the ACME account could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AcmeSetupError {
    #[error(
        "the ACME encryption key must be 32 bytes in base64 (generate one with `head -c 32 /dev/urandom | base64`)"
    )]
    BadKey,
    #[error(
        "the stored ACME account cannot be opened with this encryption key (was the key changed?)"
    )]
    Unseal,
    #[error("the stored ACME account is unreadable: {0}")]
    Credentials(String),
    #[error("the ACME CA at {url}: {message}")]
    Ca { url: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The account's key is sealed with ChaCha20-Poly1305 under the configured key.
struct Sealer {
    key: LessSafeKey,
    random: SystemRandom,
}

impl Sealer {
    fn new(key: &Secret) -> Result<Self, AcmeSetupError> {
        let bytes = BASE64
            .decode(key.expose().trim())
            .map_err(|_| AcmeSetupError::BadKey)?;
        let unbound = UnboundKey::new(&aead::CHACHA20_POLY1305, &bytes)
            .map_err(|_| AcmeSetupError::BadKey)?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
            random: SystemRandom::new(),
        })
    }

    /// Nonce, then ciphertext and tag, in base64.
    fn seal(&self, plain: &[u8]) -> Result<String, AcmeSetupError> {
        let mut nonce = [0u8; aead::NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| AcmeSetupError::Credentials("no randomness".to_owned()))?;
        let mut sealed = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut sealed,
            )
            .map_err(|_| AcmeSetupError::Credentials("sealing failed".to_owned()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(BASE64.encode(out))
    }

    fn open(&self, sealed: &str) -> Result<Vec<u8>, AcmeSetupError> {
        let bytes = BASE64.decode(sealed).map_err(|_| AcmeSetupError::Unseal)?;
        if bytes.len() < aead::NONCE_LEN {
            return Err(AcmeSetupError::Unseal);
        }
        let (nonce, rest) = bytes.split_at(aead::NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| AcmeSetupError::Unseal)?;
        let mut buffer = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut buffer)
            .map_err(|_| AcmeSetupError::Unseal)?;
        Ok(plain.to_vec())
    }
}

/// The CA, through an account every replica shares.
pub struct AcmeClient {
    account: Account,
    /// Keys of orders finalized here whose certificate the CA has not handed out yet.
    pending_keys: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for AcmeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeClient")
            .field("account", &self.account.id())
            .finish_non_exhaustive()
    }
}

impl AcmeClient {
    /// Opens the account stored for the CA's directory, or creates one and stores it (the
    /// first replica to store wins; the others use its account).
    pub async fn connect(
        config: &AcmeConfig,
        store: Arc<dyn Store>,
    ) -> Result<Self, AcmeSetupError> {
        let sealer = Sealer::new(&config.encryption_key)?;
        let url = &config.directory_url;
        let ca = |error: instant_acme::Error| AcmeSetupError::Ca {
            url: url.clone(),
            message: error.to_string(),
        };
        let builder = || match &config.ca_root {
            Some(root) => Account::builder_with_root(root).map_err(ca),
            None => Account::builder().map_err(ca),
        };
        if let Some(sealed) = store.acme_account(url).await? {
            let account = builder()?
                .from_credentials(unseal(&sealer, &sealed)?)
                .await
                .map_err(ca)?;
            tracing::info!(directory = %url, account = account.id(), "using the stored acme account");
            return Ok(Self::with_account(account));
        }
        let contacts: Vec<&str> = config.contacts.iter().map(String::as_str).collect();
        let (account, credentials) = builder()?
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                url.clone(),
                None,
            )
            .await
            .map_err(ca)?;
        let json = serde_json::to_vec(&credentials)
            .map_err(|e| AcmeSetupError::Credentials(e.to_string()))?;
        let sealed = sealer.seal(&json)?;
        let stored = store.put_acme_account(url, &sealed, now_millis()).await?;
        if stored == sealed {
            tracing::info!(directory = %url, account = account.id(), "created acme account");
            return Ok(Self::with_account(account));
        }
        // Another replica stored its account first: use that one, so all share one.
        let account = builder()?
            .from_credentials(unseal(&sealer, &stored)?)
            .await
            .map_err(ca)?;
        Ok(Self::with_account(account))
    }

    fn with_account(account: Account) -> Self {
        Self {
            account,
            pending_keys: Mutex::new(HashMap::new()),
        }
    }

    fn pending_keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.pending_keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn open_order(&self, operation: &'static str, url: &str) -> Result<Order, CloudError> {
        self.account
            .order(url.to_owned())
            .await
            .map_err(|e| classify(operation, e))
    }

    /// Downloads the certificate of an order finalized with `key_pem`, if issued by now.
    async fn download(
        &self,
        order: &mut Order,
        key_pem: &str,
    ) -> Result<Option<IssuedCertificate>, CloudError> {
        let deadline = tokio::time::Instant::now() + ISSUE_WAIT;
        loop {
            let chain = order
                .certificate()
                .await
                .map_err(|e| classify("acme:Certificate", e))?;
            if let Some(chain) = chain {
                return issued(&chain, key_pem).map(Some);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(ISSUE_POLL).await;
        }
    }
}

fn unseal(sealer: &Sealer, sealed: &str) -> Result<AccountCredentials, AcmeSetupError> {
    let json = sealer.open(sealed)?;
    serde_json::from_slice(&json).map_err(|e| AcmeSetupError::Credentials(e.to_string()))
}

/// Our view of an order: its status and its HTTP-01 challenges.
async fn view(order: &mut Order) -> Result<AcmeOrder, CloudError> {
    let url = order.url().to_owned();
    let state = order.state();
    let status = match state.status {
        instant_acme::OrderStatus::Pending => OrderStatus::Pending,
        instant_acme::OrderStatus::Ready => OrderStatus::Ready,
        instant_acme::OrderStatus::Processing => OrderStatus::Processing,
        instant_acme::OrderStatus::Valid => OrderStatus::Valid,
        instant_acme::OrderStatus::Invalid => OrderStatus::Invalid,
    };
    let error = state.error.as_ref().map(ToString::to_string);
    let mut challenges = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.map_err(|e| classify("acme:GetAuthorization", e))?;
        let Identifier::Dns(name) = &authorization.identifier().identifier.clone() else {
            continue;
        };
        let Ok(domain) = Hostname::parse(name) else {
            continue;
        };
        let Some(challenge) = authorization.challenge(ChallengeType::Http01) else {
            continue;
        };
        challenges.push(Http01Challenge {
            domain,
            token: challenge.token.clone(),
            key_authorization: challenge.key_authorization().as_str().to_owned(),
            status: challenge_status(challenge.status).to_owned(),
            error: challenge.error.as_ref().map(ToString::to_string),
        });
    }
    Ok(AcmeOrder {
        url,
        status,
        challenges,
        error,
    })
}

fn challenge_status(status: ChallengeStatus) -> &'static str {
    match status {
        ChallengeStatus::Pending => "pending",
        ChallengeStatus::Processing => "processing",
        ChallengeStatus::Valid => "valid",
        ChallengeStatus::Invalid => "invalid",
    }
}

/// The material ACM imports: the leaf, its private key and the intermediates.
fn issued(chain: &str, key_pem: &str) -> Result<IssuedCertificate, CloudError> {
    let (leaf, intermediates) = split_pem_chain(chain);
    let parsed = reconcilers::x509::parse_pem(&leaf);
    let (Some(not_before), Some(not_after)) = (
        parsed.as_ref().and_then(|p| p.not_before),
        parsed.as_ref().and_then(|p| p.not_after),
    ) else {
        return Err(CloudError::new(
            ErrorKind::Other,
            "acme:Certificate",
            "the CA's certificate has no readable validity",
        ));
    };
    Ok(IssuedCertificate {
        material: CertificateMaterial {
            certificate_pem: leaf,
            private_key_pem: key_pem.to_owned(),
            chain_pem: intermediates,
        },
        not_before,
        not_after,
    })
}

/// Maps an ACME error to the bounded kinds: the CA's rate limits are throttling (wait), a
/// missing order is not found, problems with the request are invalid, the network transient.
fn classify(operation: &'static str, error: instant_acme::Error) -> CloudError {
    let kind = match &error {
        instant_acme::Error::Api(problem) => {
            let kind = problem.r#type.as_deref().unwrap_or_default();
            match kind.rsplit(':').next().unwrap_or_default() {
                "rateLimited" => ErrorKind::Throttled,
                "serverInternal" => ErrorKind::Transient,
                _ if problem.status == Some(404) => ErrorKind::NotFound,
                "malformed" | "unauthorized" | "rejectedIdentifier" | "caa" | "badCSR"
                | "orderNotReady" | "dns" | "connection" | "incorrectResponse" => {
                    ErrorKind::Invalid
                }
                _ => ErrorKind::Other,
            }
        }
        instant_acme::Error::Http(_) | instant_acme::Error::Other(_) => ErrorKind::Transient,
        _ => ErrorKind::Other,
    };
    CloudError::new(kind, operation, error)
}

#[async_trait]
impl Acme for AcmeClient {
    async fn new_order(&self, domain: &Hostname) -> Result<AcmeOrder, CloudError> {
        let identifiers = [Identifier::Dns(domain.to_string())];
        let mut order = self
            .account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|e| classify("acme:NewOrder", e))?;
        view(&mut order).await
    }

    async fn order(&self, url: &str) -> Result<AcmeOrder, CloudError> {
        let mut order = self.open_order("acme:GetOrder", url).await?;
        view(&mut order).await
    }

    async fn challenges_ready(&self, url: &str) -> Result<(), CloudError> {
        let mut order = self.open_order("acme:GetOrder", url).await?;
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization =
                authorization.map_err(|e| classify("acme:GetAuthorization", e))?;
            if authorization.status != AuthorizationStatus::Pending {
                continue;
            }
            let Some(mut challenge) = authorization.challenge(ChallengeType::Http01) else {
                continue;
            };
            if challenge.status == ChallengeStatus::Pending {
                challenge
                    .set_ready()
                    .await
                    .map_err(|e| classify("acme:Challenge", e))?;
            }
        }
        Ok(())
    }

    async fn renewal_window(
        &self,
        certificate_id: &str,
    ) -> Result<Option<RenewalWindow>, CloudError> {
        let Some((aki, serial)) = certificate_id.split_once('.') else {
            return Err(CloudError::new(
                ErrorKind::Invalid,
                "acme:RenewalInfo",
                format!("{certificate_id:?} is no renewal information identifier"),
            ));
        };
        let id = CertificateIdentifier {
            authority_key_identifier: aki.into(),
            serial: serial.into(),
        };
        let (info, retry_after) = match self.account.renewal_info(&id).await {
            Ok(answer) => answer,
            Err(instant_acme::Error::Unsupported(_)) => return Ok(None),
            Err(error) => return Err(classify("acme:RenewalInfo", error)),
        };
        let window = &info.suggested_window;
        let start = window.start.unix_timestamp_nanos() / 1_000_000;
        let end = window.end.unix_timestamp_nanos() / 1_000_000;
        Ok(Some(RenewalWindow {
            start: i64::try_from(start).unwrap_or(i64::MAX),
            end: i64::try_from(end).unwrap_or(i64::MAX),
            retry_after,
        }))
    }

    async fn finalize(&self, url: &str) -> Result<Option<IssuedCertificate>, CloudError> {
        let mut order = self.open_order("acme:GetOrder", url).await?;
        let pending = self.pending_keys().get(url).cloned();
        let key_pem = match (order.state().status, pending) {
            (_, Some(key_pem)) => key_pem,
            (instant_acme::OrderStatus::Ready, None) => {
                let key_pem = order
                    .finalize()
                    .await
                    .map_err(|e| classify("acme:Finalize", e))?;
                self.pending_keys().insert(url.to_owned(), key_pem.clone());
                key_pem
            }
            (status, None) => {
                return Err(CloudError::new(
                    ErrorKind::Invalid,
                    "acme:Finalize",
                    format!("order {url} is {status:?} and its key is not held here"),
                ));
            }
        };
        let downloaded = self.download(&mut order, &key_pem).await;
        if !matches!(downloaded, Ok(None)) {
            self.pending_keys().remove(url);
        }
        downloaded
    }
}

/// An [`AcmeClient`] connected on first use (and again after a failed connect), so the
/// controller starts and serves while the CA is unreachable; certificates wait meanwhile.
pub struct LazyAcme {
    config: AcmeConfig,
    store: Arc<dyn Store>,
    client: tokio::sync::OnceCell<AcmeClient>,
}

impl LazyAcme {
    /// Checks the configuration now (a bad key fails the start), connects later.
    pub fn new(config: AcmeConfig, store: Arc<dyn Store>) -> Result<Self, AcmeSetupError> {
        Sealer::new(&config.encryption_key)?;
        Ok(Self {
            config,
            store,
            client: tokio::sync::OnceCell::new(),
        })
    }

    async fn client(&self) -> Result<&AcmeClient, CloudError> {
        self.client
            .get_or_try_init(|| AcmeClient::connect(&self.config, self.store.clone()))
            .await
            .map_err(|error| {
                tracing::warn!(%error, "could not set up the acme account");
                let kind = match error {
                    AcmeSetupError::Ca { .. } | AcmeSetupError::Store(_) => ErrorKind::Transient,
                    _ => ErrorKind::Other,
                };
                CloudError::new(kind, "acme:NewAccount", error)
            })
    }
}

#[async_trait]
impl Acme for LazyAcme {
    async fn new_order(&self, domain: &Hostname) -> Result<AcmeOrder, CloudError> {
        self.client().await?.new_order(domain).await
    }

    async fn order(&self, url: &str) -> Result<AcmeOrder, CloudError> {
        self.client().await?.order(url).await
    }

    async fn challenges_ready(&self, url: &str) -> Result<(), CloudError> {
        self.client().await?.challenges_ready(url).await
    }

    async fn finalize(&self, url: &str) -> Result<Option<IssuedCertificate>, CloudError> {
        self.client().await?.finalize(url).await
    }

    async fn renewal_window(
        &self,
        certificate_id: &str,
    ) -> Result<Option<RenewalWindow>, CloudError> {
        self.client().await?.renewal_window(certificate_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Secret {
        Secret::new(BASE64.encode([7u8; 32]))
    }

    #[test]
    fn sealed_credentials_open_only_with_their_key() {
        let sealer = Sealer::new(&key()).expect("key");
        let sealed = sealer.seal(b"account key").expect("seal");
        assert!(!sealed.contains("account"));
        assert_ne!(
            sealed,
            sealer.seal(b"account key").expect("seal"),
            "fresh nonce"
        );
        assert_eq!(sealer.open(&sealed).expect("open"), b"account key");

        let other = Sealer::new(&Secret::new(BASE64.encode([8u8; 32]))).expect("key");
        assert!(matches!(other.open(&sealed), Err(AcmeSetupError::Unseal)));
        assert!(matches!(
            sealer.open("bm9wZQ=="),
            Err(AcmeSetupError::Unseal)
        ));
    }

    #[test]
    fn a_key_of_the_wrong_size_is_refused_without_echoing_it() {
        let error = Sealer::new(&Secret::new("c2hvcnQ="))
            .err()
            .expect("refused");
        assert!(matches!(error, AcmeSetupError::BadKey));
        assert!(!error.to_string().contains("c2hvcnQ"));
    }

    #[test]
    fn rate_limits_are_throttling_and_missing_orders_not_found() {
        let problem = |kind: &str, status| {
            instant_acme::Error::Api(instant_acme::Problem {
                r#type: Some(format!("urn:ietf:params:acme:error:{kind}")),
                detail: Some("detail".to_owned()),
                status: Some(status),
                subproblems: Vec::new(),
            })
        };
        assert_eq!(
            classify("acme:NewOrder", problem("rateLimited", 429)).kind,
            ErrorKind::Throttled
        );
        assert_eq!(
            classify("acme:GetOrder", problem("malformed", 404)).kind,
            ErrorKind::NotFound
        );
        assert_eq!(
            classify("acme:Challenge", problem("unauthorized", 403)).kind,
            ErrorKind::Invalid
        );
    }
}
