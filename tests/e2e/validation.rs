//! Every validation rule rejects with a message the caller can act on, and writes nothing.

use reconcilers::source::build_stored_zip;
use shop_controller::grpc::proto::*;
use tonic::Code;

use crate::support::dev_server;

struct Case {
    name: &'static str,
    request: DeployShopRequest,
    code: Code,
    message: &'static str,
}

use crate::support::deploy_request as request;

fn with(shop: &str, change: impl FnOnce(&mut DeployShopRequest)) -> DeployShopRequest {
    let mut request = request(shop);
    change(&mut request);
    request
}

fn cases() -> Vec<Case> {
    let long = format!("{}.es-hs.com", "a".repeat(290));
    let long_label = format!("{}.es-hs.com", "b".repeat(64));
    let file_name_long = format!("{}.es-hs.com", vec!["c".repeat(60); 4].join("."));
    let invalid = Code::InvalidArgument;
    let precondition = Code::FailedPrecondition;
    vec![
        Case {
            name: "semicolon",
            request: request("a.com;"),
            code: invalid,
            message: "contains `;`",
        },
        Case {
            name: "brace",
            request: request("a.com{"),
            code: invalid,
            message: "contains `{`",
        },
        Case {
            name: "command substitution",
            request: request("$(id).com"),
            code: invalid,
            message: "contains `$`",
        },
        Case {
            name: "newline",
            request: request("a.es-hs.com\nserver_name x"),
            code: invalid,
            message: "contains U+000A",
        },
        Case {
            name: "space",
            request: request("a b.es-hs.com"),
            code: invalid,
            message: "contains U+0020",
        },
        Case {
            name: "quote",
            request: request("a'.es-hs.com"),
            code: invalid,
            message: "contains `'`",
        },
        Case {
            name: "cyrillic look-alike",
            request: request("exаmple.es-hs.com"),
            code: invalid,
            message: "mixing Latin and Cyrillic",
        },
        Case {
            name: "look-alike parent",
            request: request("shop.es-hѕ.com"),
            code: invalid,
            message: "mixing Latin and Cyrillic",
        },
        Case {
            name: "300 characters",
            request: request(&long),
            code: invalid,
            message: "the limit is 253",
        },
        Case {
            name: "too long for a file name",
            request: request(&file_name_long),
            code: invalid,
            message: "a shop domain names files, so the limit is 240",
        },
        Case {
            name: "64-character label",
            request: request(&long_label),
            code: invalid,
            message: "the limit is 63",
        },
        Case {
            name: "wildcard",
            request: request("*.es-hs.com"),
            code: invalid,
            message: "is a wildcard",
        },
        Case {
            name: "trailing dot",
            request: request("example.es-hs.com."),
            code: invalid,
            message: "trailing dot",
        },
        Case {
            name: "one label",
            request: request("localhost"),
            code: invalid,
            message: "at least two labels",
        },
        Case {
            name: "empty",
            request: request(""),
            code: invalid,
            message: "is empty",
        },
        Case {
            name: "hyphen edge",
            request: request("-shop.es-hs.com"),
            code: invalid,
            message: "hyphen",
        },
        Case {
            name: "outside parents",
            request: request("shop.example.com"),
            code: invalid,
            message: "not under an allowed parent domain",
        },
        Case {
            name: "parent itself",
            request: request("es-hs.com"),
            code: invalid,
            message: "not under an allowed parent domain",
        },
        Case {
            name: "bad region",
            request: with("example.es-hs.com", |r| r.region = "eu_west".to_owned()),
            code: invalid,
            message: "is not an AWS region name",
        },
        Case {
            name: "unknown region",
            request: with("example.es-hs.com", |r| r.region = "ap-south-2".to_owned()),
            code: precondition,
            message: "region ap-south-2 is not configured",
        },
        Case {
            name: "bad bucket",
            request: with("example.es-hs.com", |r| {
                r.source_bucket = "Shop_Sources".to_owned()
            }),
            code: invalid,
            message: "bucket name \"Shop_Sources\" may hold only",
        },
        Case {
            name: "bad version",
            request: with("example.es-hs.com", |r| {
                r.source_version = Some("v1; rm -rf /".to_owned())
            }),
            code: invalid,
            message: "is not an S3 version id",
        },
        Case {
            name: "custom domain hostile",
            request: with("example.es-hs.com", |r| {
                r.custom_domain = Some("shop.com`id`".to_owned())
            }),
            code: invalid,
            message: "custom_domain \"shop.com`id`\" contains `",
        },
        Case {
            name: "custom domain ours",
            request: with("example.es-hs.com", |r| {
                r.custom_domain = Some("other.es-hs.com".to_owned())
            }),
            code: invalid,
            message: "custom domain other.es-hs.com is under es-hs.com",
        },
        Case {
            name: "missing zip",
            request: request("missing.es-hs.com"),
            code: precondition,
            message: "source s3://shop-sources/missing.es-hs.com.zip does not exist",
        },
        Case {
            name: "missing version",
            request: with("example.es-hs.com", |r| {
                r.source_version = Some("v99".to_owned())
            }),
            code: precondition,
            message: "source s3://shop-sources/example.es-hs.com.zip (version v99) does not exist",
        },
        Case {
            name: "no scripts folder",
            request: request("noscripts.es-hs.com"),
            code: precondition,
            message: "has no scripts/ folder at its top level",
        },
        Case {
            name: "not a zip",
            request: request("notzip.es-hs.com"),
            code: precondition,
            message: "is not a zip archive",
        },
        Case {
            name: "missing bucket",
            request: with("example.es-hs.com", |r| {
                r.source_bucket = "no-such-bucket".to_owned()
            }),
            code: precondition,
            message: "does not exist",
        },
    ]
}

#[tokio::test]
async fn every_rule_rejects_clearly_and_writes_nothing() {
    let (server, aws, store) = dev_server().await;
    aws.put_object(
        "shop-sources",
        "noscripts.es-hs.com.zip",
        build_stored_zip(&[("app/scripts/run.sh", b"")]),
    );
    aws.put_object(
        "shop-sources",
        "notzip.es-hs.com.zip",
        &b"this is plain text, not an archive"[..],
    );
    let mut shops = server.shops().await;

    for case in cases() {
        let error = shops.deploy_shop(case.request).await.expect_err(case.name);
        assert_eq!(
            error.code(),
            case.code,
            "{}: {}",
            case.name,
            error.message()
        );
        assert!(
            error.message().contains(case.message),
            "{}: {:?} does not say {:?}",
            case.name,
            error.message(),
            case.message
        );
    }

    let page = shops
        .list_shops(ListShopsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(page.shops.is_empty(), "a rejected deploy wrote a shop");
    for shop in [
        "missing.es-hs.com",
        "noscripts.es-hs.com",
        "example.es-hs.com",
    ] {
        assert!(
            store
                .store
                .shop_events(shop, 10)
                .await
                .expect("events")
                .is_empty()
        );
    }
}

#[tokio::test]
async fn a_disabled_region_takes_no_deploys() {
    let (server, _aws, _store) = dev_server().await;
    let mut admin = server.admin().await;
    let mut config = admin
        .get_region_config(GetRegionConfigRequest {
            region: "eu-west-1".to_owned(),
        })
        .await
        .expect("get")
        .into_inner();
    config.enabled = false;
    admin
        .put_region_config(PutRegionConfigRequest {
            region_config: Some(config),
        })
        .await
        .expect("put");

    let error = server
        .shops()
        .await
        .deploy_shop(request("example.es-hs.com"))
        .await
        .expect_err("disabled");
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(
        error.message(),
        "region eu-west-1 is disabled and takes no deploys"
    );
}
