//! ACM in the simulated account: imported certificates with tags, re-import into the same ARN
//! (tags kept, as real ACM does; tags on a re-import are refused, as real ACM does), the
//! account quota, and "in use" computed from the simulated listeners.
//!
//! A certificate's domain (first DNS alternative name, else the common name) and `notAfter`
//! are read from the PEM by a small DER walker ([`crate::x509`]). Facts registered with
//! [`SimulatedAws::set_certificate_facts`] for a PEM take precedence, so tests can use fake PEM
//! text; a PEM that is neither readable nor registered has an empty domain and no expiry.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;

use crate::cloud::{
    CertificateMaterial, CertificateSummary, Certificates, CloudError, ErrorKind, Quota, Tag,
};

use super::load_balancing::merge_tags;
use super::{ResourceType, SimulatedAws, State, error, paging};
use crate::x509;

/// ACM refuses private keys larger than this.
const MAX_PRIVATE_KEY_BYTES: usize = 5 * 1024;

/// What ACM would read from a certificate's X.509 fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateFacts {
    /// The certificate's domain name.
    pub domain: String,
    /// Milliseconds since the Unix epoch.
    pub not_after: Option<i64>,
}

struct SimCertificate {
    facts: CertificateFacts,
    tags: Vec<Tag>,
}

#[derive(Default)]
pub(crate) struct AcmState {
    certificates: BTreeMap<String, SimCertificate>,
    /// Facts by certificate PEM.
    facts: HashMap<String, CertificateFacts>,
}

impl AcmState {
    pub(crate) fn exists(&self, arn: &str) -> bool {
        self.certificates.contains_key(arn)
    }

    pub(crate) fn tagged(&self) -> impl Iterator<Item = (ResourceType, &str, &[Tag])> {
        self.certificates
            .iter()
            .map(|(arn, c)| (ResourceType::Certificate, arn.as_str(), c.tags.as_slice()))
    }

    fn get_mut(
        &mut self,
        operation: &'static str,
        arn: &str,
    ) -> Result<&mut SimCertificate, CloudError> {
        check_arn(operation, arn)?;
        self.certificates.get_mut(arn).ok_or_else(|| {
            let message = format!("certificate {arn} not found");
            error(
                ErrorKind::NotFound,
                operation,
                "ResourceNotFoundException",
                message,
            )
        })
    }
}

fn check_arn(operation: &'static str, arn: &str) -> Result<(), CloudError> {
    if arn.starts_with("arn:aws:acm:") && arn.contains(":certificate/") {
        return Ok(());
    }
    let message = format!("{arn} is not a certificate ARN");
    Err(error(
        ErrorKind::Invalid,
        operation,
        "InvalidArnException",
        message,
    ))
}

fn validation(message: &str) -> CloudError {
    error(
        ErrorKind::Invalid,
        "acm:ImportCertificate",
        "ValidationException",
        message,
    )
}

fn check_material(state: &State, material: &CertificateMaterial) -> Result<(), CloudError> {
    if !material
        .certificate_pem
        .contains("-----BEGIN CERTIFICATE-----")
    {
        return Err(validation("the certificate is not PEM-encoded"));
    }
    let key = &material.private_key_pem;
    if !(key.contains("-----BEGIN") && key.contains("PRIVATE KEY-----")) {
        return Err(validation("the private key is not PEM-encoded"));
    }
    if key.len() > MAX_PRIVATE_KEY_BYTES {
        return Err(validation("the private key is larger than 5 KB"));
    }
    let expired = facts_of(state, &material.certificate_pem)
        .not_after
        .is_some_and(|not_after| not_after <= state.clock.epoch_millis());
    if expired {
        return Err(validation("the certificate has expired"));
    }
    Ok(())
}

/// Registered facts first, then what the PEM says.
fn facts_of(state: &State, certificate_pem: &str) -> CertificateFacts {
    if let Some(facts) = state.acm.facts.get(certificate_pem) {
        return facts.clone();
    }
    let parsed = x509::parse_pem(certificate_pem);
    let parsed = parsed.unwrap_or(x509::Parsed {
        domain: None,
        not_before: None,
        not_after: None,
        serial: None,
        authority_key_id: None,
    });
    CertificateFacts {
        domain: parsed.domain.unwrap_or_default(),
        not_after: parsed.not_after,
    }
}

fn import(
    state: &mut State,
    material: &CertificateMaterial,
    existing_arn: Option<&str>,
    tags: &[Tag],
) -> Result<String, CloudError> {
    const OPERATION: &str = "acm:ImportCertificate";
    check_material(state, material)?;
    let facts = facts_of(state, &material.certificate_pem);
    if let Some(arn) = existing_arn {
        if !tags.is_empty() {
            return Err(validation("tagging is not permitted on re-import"));
        }
        state.acm.get_mut(OPERATION, arn)?.facts = facts;
        return Ok(arn.to_owned());
    }
    let quota = state.config.quotas.certificates;
    if state.acm.certificates.len() >= quota {
        let kind = ErrorKind::QuotaExceeded(Quota::Certificates);
        let message = format!("the account holds at most {quota} certificates");
        return Err(error(kind, OPERATION, "LimitExceededException", message));
    }

    let mut merged = Vec::new();
    merge_tags(
        OPERATION,
        &mut merged,
        tags,
        state.config.quotas.tags_per_resource,
    )?;
    let (region, account) = (&state.config.region, &state.config.account);
    let arn = format!(
        "arn:aws:acm:{region}:{account}:certificate/{}",
        state.rng.uuid()
    );
    let certificate = SimCertificate {
        facts,
        tags: merged,
    };
    state.acm.certificates.insert(arn.clone(), certificate);
    Ok(arn)
}

fn delete(state: &mut State, arn: &str) -> Result<(), CloudError> {
    const OPERATION: &str = "acm:DeleteCertificate";
    state.acm.get_mut(OPERATION, arn)?;
    let users = state.elb.load_balancers_using_certificate(arn);
    if !users.is_empty() {
        let message = format!("certificate {arn} is in use by {}", users.join(", "));
        return Err(error(
            ErrorKind::Invalid,
            OPERATION,
            "ResourceInUseException",
            message,
        ));
    }
    state.acm.certificates.remove(arn);
    Ok(())
}

/// Test controls for ACM.
impl SimulatedAws {
    /// What ACM will read from this certificate PEM when it is imported.
    pub fn set_certificate_facts(&self, certificate_pem: &str, facts: CertificateFacts) {
        let mut state = self.state();
        state.acm.facts.insert(certificate_pem.to_owned(), facts);
    }
}

#[async_trait]
impl Certificates for SimulatedAws {
    /// Real ACM keeps a certificate's tags on re-import and refuses tags passed with one.
    async fn import_certificate(
        &self,
        material: &CertificateMaterial,
        existing_arn: Option<&str>,
        tags: &[Tag],
    ) -> Result<String, CloudError> {
        self.call("acm:ImportCertificate", |state: &mut State| {
            import(state, material, existing_arn, tags)
        })
        .await
    }

    async fn describe_certificate(&self, arn: &str) -> Result<CertificateSummary, CloudError> {
        const OPERATION: &str = "acm:DescribeCertificate";
        self.call(OPERATION, |state: &mut State| {
            let facts = state.acm.get_mut(OPERATION, arn)?.facts.clone();
            Ok(CertificateSummary {
                arn: arn.to_owned(),
                domain: facts.domain,
                not_after: facts.not_after,
                in_use_by: state.elb.load_balancers_using_certificate(arn),
            })
        })
        .await
    }

    async fn list_certificates(&self) -> Result<Vec<String>, CloudError> {
        const OPERATION: &str = "acm:ListCertificates";
        self.all_pages(OPERATION, |state: &mut State, token| {
            let arns = state.acm.certificates.keys();
            let items = arns.map(|arn| (arn.clone(), arn.clone())).collect();
            paging::page(OPERATION, items, token, paging::LIST_CERTIFICATES)
        })
        .await
    }

    async fn delete_certificate(&self, arn: &str) -> Result<(), CloudError> {
        self.call("acm:DeleteCertificate", |state: &mut State| {
            delete(state, arn)
        })
        .await
    }

    async fn list_tags(&self, arn: &str) -> Result<Vec<Tag>, CloudError> {
        const OPERATION: &str = "acm:ListTagsForCertificate";
        self.call(OPERATION, |state: &mut State| {
            Ok(state.acm.get_mut(OPERATION, arn)?.tags.clone())
        })
        .await
    }

    async fn add_tags(&self, arn: &str, tags: &[Tag]) -> Result<(), CloudError> {
        const OPERATION: &str = "acm:AddTagsToCertificate";
        self.call(OPERATION, |state: &mut State| {
            let quota = state.config.quotas.tags_per_resource;
            let certificate = state.acm.get_mut(OPERATION, arn)?;
            merge_tags(OPERATION, &mut certificate.tags, tags, quota)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::LoadBalancing;
    use crate::sim::{LoadBalancerKind, SimConfig};

    fn material(name: &str) -> CertificateMaterial {
        CertificateMaterial {
            certificate_pem: format!(
                "-----BEGIN CERTIFICATE-----\n{name}\n-----END CERTIFICATE-----\n"
            ),
            private_key_pem: "-----BEGIN PRIVATE KEY-----\nk\n-----END PRIVATE KEY-----\n"
                .to_owned(),
            chain_pem: String::new(),
        }
    }

    fn aws() -> SimulatedAws {
        SimulatedAws::with_config(SimConfig::manual())
    }

    fn owner() -> Vec<Tag> {
        vec![Tag::new("shop-controller/shop", "a.example.com")]
    }

    #[tokio::test]
    async fn a_reimport_keeps_the_arn_and_the_tags_and_takes_new_facts() {
        let aws = aws();
        let first = material("one");
        let renewed = material("two");
        let later = aws.now_millis() + 90 * 86_400_000;
        let facts = |not_after| CertificateFacts {
            domain: "shop.example.com".to_owned(),
            not_after: Some(not_after),
        };
        aws.set_certificate_facts(&first.certificate_pem, facts(later));
        aws.set_certificate_facts(&renewed.certificate_pem, facts(later * 2));
        let arn = aws
            .import_certificate(&first, None, &owner())
            .await
            .expect("imported");

        let again = aws.import_certificate(&renewed, Some(&arn), &[]).await;
        let tagged = aws.import_certificate(&renewed, Some(&arn), &owner()).await;

        assert_eq!(again, Ok(arn.clone()));
        assert_eq!(tagged.map_err(|e| e.kind), Err(ErrorKind::Invalid));
        assert_eq!(aws.list_tags(&arn).await, Ok(owner()));
        let summary = aws.describe_certificate(&arn).await.expect("described");
        assert_eq!(summary.domain, "shop.example.com");
        assert_eq!(summary.not_after, Some(later * 2));
        assert!(arn.starts_with("arn:aws:acm:eu-west-1:123456789012:certificate/"));
    }

    #[tokio::test]
    async fn the_domain_and_expiry_are_read_from_the_certificate() {
        let aws = aws();
        let real = CertificateMaterial {
            certificate_pem: x509::tests::WITH_ALT_NAMES.to_owned(),
            ..material("unused")
        };

        let arn = aws
            .import_certificate(&real, None, &[])
            .await
            .expect("imported");

        let summary = aws.describe_certificate(&arn).await.expect("described");
        assert_eq!(summary.domain, "shop.example.com");
        assert_eq!(summary.not_after, Some(1_804_091_488_000));
        assert_eq!(summary.in_use_by, Vec::<String>::new());
    }

    #[tokio::test]
    async fn bad_imports_are_refused() {
        let aws = aws();
        let expired = material("old");
        aws.set_certificate_facts(
            &expired.certificate_pem,
            CertificateFacts {
                domain: "old.example.com".to_owned(),
                not_after: Some(aws.now_millis() - 1),
            },
        );
        let mut not_pem = material("x");
        not_pem.certificate_pem = "garbage".to_owned();
        let mut big_key = material("y");
        big_key.private_key_pem = big_key.private_key_pem.repeat(200);
        let unknown = "arn:aws:acm:eu-west-1:123456789012:certificate/nope";
        let cases = [
            (expired, None, ErrorKind::Invalid),
            (not_pem, None, ErrorKind::Invalid),
            (big_key, None, ErrorKind::Invalid),
            (material("z"), Some(unknown), ErrorKind::NotFound),
            (material("z"), Some("arn:aws:iam::1:x"), ErrorKind::Invalid),
        ];

        for (material, existing, expected) in cases {
            let error = aws
                .import_certificate(&material, existing, &[])
                .await
                .expect_err("refused");
            assert_eq!(error.kind, expected, "{existing:?}");
        }
        assert_eq!(aws.list_certificates().await, Ok(vec![]));
    }

    #[tokio::test]
    async fn a_certificate_in_use_cannot_be_deleted() {
        let aws = aws();
        let balancer = aws.add_load_balancer(LoadBalancerKind::Application, "proxy");
        let listener = aws.https_listener_of(&balancer).expect("alb has https");
        let arn = aws
            .import_certificate(&material("a"), None, &[])
            .await
            .expect("imported");
        aws.add_listener_certificates(&listener, std::slice::from_ref(&arn))
            .await
            .expect("attached");

        let in_use = aws.delete_certificate(&arn).await.expect_err("in use");
        let summary = aws.describe_certificate(&arn).await.expect("described");
        aws.remove_listener_certificates(&listener, std::slice::from_ref(&arn))
            .await
            .expect("detached");
        aws.delete_certificate(&arn).await.expect("deleted");
        let gone = aws.delete_certificate(&arn).await.expect_err("gone");

        assert_eq!(in_use.kind, ErrorKind::Invalid);
        assert!(in_use.message.starts_with("ResourceInUseException"));
        assert_eq!(summary.in_use_by, vec![balancer]);
        assert_eq!(gone.kind, ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn the_account_certificate_quota_holds() {
        let mut config = SimConfig::manual();
        config.quotas.certificates = 2;
        let aws = SimulatedAws::with_config(config);
        for name in ["a", "b"] {
            aws.import_certificate(&material(name), None, &[])
                .await
                .expect("room");
        }

        let error = aws
            .import_certificate(&material("c"), None, &[])
            .await
            .expect_err("full");

        assert_eq!(error.kind, ErrorKind::QuotaExceeded(Quota::Certificates));
    }

    #[tokio::test]
    async fn certificates_are_listed_in_pages_of_a_thousand() {
        let aws = aws();
        for i in 0..1001 {
            let name = format!("c{i}");
            aws.import_certificate(&material(&name), None, &[])
                .await
                .expect("imported");
        }

        let arns = aws.list_certificates().await.expect("listed");

        assert_eq!(arns.len(), 1001);
        assert_eq!(aws.call_count("acm:ListCertificates"), 2);
    }

    #[tokio::test]
    async fn certificate_tags_merge_by_key() {
        let aws = aws();
        let arn = aws
            .import_certificate(&material("a"), None, &owner())
            .await
            .expect("imported");

        let renamed = [Tag::new("shop-controller/shop", "b.example.com")];
        Certificates::add_tags(&aws, &arn, &renamed)
            .await
            .expect("tagged");

        let tags = aws.list_tags(&arn).await.expect("listed");
        assert_eq!(
            tags,
            vec![Tag::new("shop-controller/shop", "b.example.com")]
        );
    }
}
