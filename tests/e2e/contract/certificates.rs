//! The `Certificates` contract.

use reconcilers::cloud::{ErrorKind, Owner, Tag};

use super::Backend;

pub(super) async fn certificates_import_reimport_and_delete(backend: Backend) {
    let acm = backend.certificates.clone();
    let owner = Owner {
        installation: "contract".to_owned(),
        shop: "a.es-hs.com".to_owned(),
        resource: "certificate".to_owned(),
    };
    let material = backend.certificate_material("shop.merchant.example");
    let arn = acm
        .import_certificate(&material, None, &owner.tags())
        .await
        .expect("import");
    assert!(arn.starts_with("arn:aws:acm:"), "{arn}");
    assert_eq!(
        Owner::from_tags(&acm.list_tags(&arn).await.expect("tags")),
        Some(owner.clone())
    );
    let summary = acm.describe_certificate(&arn).await.expect("describe");
    assert_eq!(summary.domain, "shop.merchant.example");
    assert!(acm.list_certificates().await.expect("list").contains(&arn));

    let renewed = backend.certificate_material("shop.merchant.example");
    let same = acm
        .import_certificate(&renewed, Some(&arn), &[])
        .await
        .expect("re-import");
    assert_eq!(
        same, arn,
        "a re-import keeps the ARN, so listeners keep the certificate"
    );
    acm.add_tags(&arn, &owner.tags()).await.expect("tags back");
    let tags = acm.list_tags(&arn).await.expect("tags");
    assert_eq!(Owner::from_tags(&tags), Some(owner));
    acm.add_tags(&arn, &[Tag::new("extra", "1")])
        .await
        .expect("more tags");

    acm.delete_certificate(&arn).await.expect("delete");
    let gone = acm.describe_certificate(&arn).await.expect_err("deleted");
    assert_eq!(gone.kind, ErrorKind::NotFound);
}
