//! [`Certificates`] over ACM: import (and re-import on renewal) the custom-domain certificates,
//! describe, list, delete and tag them.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_acm::primitives::Blob;
use aws_sdk_acm::types::{CertificateType, Filters, KeyAlgorithm};
use reconcilers::cloud::{
    CertificateMaterial, CertificateSummary, Certificates, CloudError, ErrorKind, Tag,
};

use super::calls::{Calls, all_pages};
use super::epoch_millis;

/// The ACM client of one region.
pub struct AcmCertificates {
    client: aws_sdk_acm::Client,
    calls: Arc<Calls>,
}

impl AcmCertificates {
    pub(crate) fn new(client: aws_sdk_acm::Client, calls: Arc<Calls>) -> Self {
        Self { client, calls }
    }
}

#[async_trait]
impl Certificates for AcmCertificates {
    async fn import_certificate(
        &self,
        material: &CertificateMaterial,
        existing_arn: Option<&str>,
        tags: &[Tag],
    ) -> Result<String, CloudError> {
        let operation = "acm:ImportCertificate";
        // ACM rejects tags on a re-import; the caller adds them back with add_tags.
        let tags = match existing_arn {
            None => Some(acm_tags(operation, tags)?),
            Some(_) => None,
        };
        let chain = Some(&material.chain_pem)
            .filter(|chain| !chain.trim().is_empty())
            .map(|chain| Blob::new(chain.as_bytes()));
        let call = self
            .client
            .import_certificate()
            .certificate(Blob::new(material.certificate_pem.as_bytes()))
            .private_key(Blob::new(material.private_key_pem.as_bytes()))
            .set_certificate_chain(chain)
            .set_certificate_arn(existing_arn.map(str::to_owned))
            .set_tags(tags)
            .send();
        let output = self.calls.run(operation, call).await?;
        output
            .certificate_arn()
            .map(str::to_owned)
            .ok_or_else(|| CloudError::new(ErrorKind::Other, operation, "response has no arn"))
    }

    async fn describe_certificate(&self, arn: &str) -> Result<CertificateSummary, CloudError> {
        let operation = "acm:DescribeCertificate";
        let call = self
            .client
            .describe_certificate()
            .certificate_arn(arn)
            .send();
        let output = self.calls.run(operation, call).await?;
        let detail = output.certificate().ok_or_else(|| {
            CloudError::new(
                ErrorKind::NotFound,
                operation,
                format!("no certificate {arn}"),
            )
        })?;
        Ok(CertificateSummary {
            arn: detail.certificate_arn().unwrap_or(arn).to_owned(),
            domain: detail.domain_name().unwrap_or_default().to_owned(),
            not_after: detail.not_after().map(epoch_millis),
            in_use_by: detail.in_use_by().to_vec(),
        })
    }

    async fn list_certificates(&self) -> Result<Vec<String>, CloudError> {
        // Without a key-type filter ACM lists only RSA 1024/2048 certificates.
        let every_key = Filters::builder()
            .set_key_types(Some(
                KeyAlgorithm::values()
                    .iter()
                    .map(|value| KeyAlgorithm::from(*value))
                    .collect(),
            ))
            .build();
        let every_key = &every_key;
        all_pages(|next_token| async move {
            let call = self
                .client
                .list_certificates()
                .includes(every_key.clone())
                .set_next_token(next_token)
                .send();
            let page = self.calls.run("acm:ListCertificates", call).await?;
            let imported = page
                .certificate_summary_list()
                .iter()
                .filter(|summary| {
                    summary
                        .r#type()
                        .is_none_or(|t| *t == CertificateType::Imported)
                })
                .filter_map(|summary| summary.certificate_arn().map(str::to_owned))
                .collect();
            Ok((imported, page.next_token().map(str::to_owned)))
        })
        .await
    }

    async fn delete_certificate(&self, arn: &str) -> Result<(), CloudError> {
        let call = self.client.delete_certificate().certificate_arn(arn).send();
        self.calls.run("acm:DeleteCertificate", call).await?;
        Ok(())
    }

    async fn list_tags(&self, arn: &str) -> Result<Vec<Tag>, CloudError> {
        let call = self
            .client
            .list_tags_for_certificate()
            .certificate_arn(arn)
            .send();
        let output = self.calls.run("acm:ListTagsForCertificate", call).await?;
        Ok(output
            .tags()
            .iter()
            .map(|tag| Tag::new(tag.key(), tag.value().unwrap_or_default()))
            .collect())
    }

    async fn add_tags(&self, arn: &str, tags: &[Tag]) -> Result<(), CloudError> {
        let operation = "acm:AddTagsToCertificate";
        let call = self
            .client
            .add_tags_to_certificate()
            .certificate_arn(arn)
            .set_tags(Some(acm_tags(operation, tags)?))
            .send();
        self.calls.run(operation, call).await?;
        Ok(())
    }
}

fn acm_tags(
    operation: &'static str,
    tags: &[Tag],
) -> Result<Vec<aws_sdk_acm::types::Tag>, CloudError> {
    tags.iter()
        .map(|tag| {
            aws_sdk_acm::types::Tag::builder()
                .key(&tag.key)
                .value(&tag.value)
                .build()
                .map_err(|e| CloudError::new(ErrorKind::Invalid, operation, e))
        })
        .collect()
}
