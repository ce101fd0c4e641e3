//! The wire format of the remote simulated AWS: one HTTP POST of JSON per [`CloudProvider`]
//! call, so several controller processes can share one [`reconcilers::sim::SimulatedAws`]
//! (`shop-controller dev --share-sim`, `serve --simulated-aws-url`, the multi-process tests).
//!
//! The client ([`crate::aws::RemoteSim`]) and the server ([`crate::sim_server`]) both expand
//! the one list of calls, [`crate::cloud_calls`], so a method added to a trait is added there
//! once and both sides follow. A call is
//! `{"region": ..., "method": "load_balancing:create_listener", "args": [...]}` (the arguments
//! in the trait's order, owned) and its answer `{"ok": ...}` or `{"err": CloudError}`. The
//! caller names itself in [`REPLICA_HEADER`], so the server can tell processes apart.
//!
//! [`CloudProvider`]: reconcilers::cloud::CloudProvider

use reconcilers::cloud::{
    BuildRequest, CertificateMaterial, CloudError, CommandRequest, DeploymentRequest,
    HttpListenerSpec, ListenerAction, ListenerSpec, RuleSpec, TargetGroupSpec,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The one path every call is posted to.
pub const CALL_PATH: &str = "/v1/call";

/// The header naming the calling replica (its lease holder name).
pub const REPLICA_HEADER: &str = "x-shop-replica";

/// One call: the region whose capability is asked, `capability:method`, the arguments.
#[derive(Debug, Serialize, Deserialize)]
pub struct Call<A> {
    pub region: String,
    pub method: String,
    pub args: A,
}

/// The answer to a call, as the trait method returned it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply<T> {
    Ok(T),
    Err(CloudError),
}

impl<T> From<Result<T, CloudError>> for Reply<T> {
    fn from(result: Result<T, CloudError>) -> Self {
        match result {
            Ok(value) => Reply::Ok(value),
            Err(error) => Reply::Err(error),
        }
    }
}

impl<T> From<Reply<T>> for Result<T, CloudError> {
    fn from(reply: Reply<T>) -> Self {
        match reply {
            Reply::Ok(value) => Ok(value),
            Reply::Err(error) => Err(error),
        }
    }
}

/// How a trait method's parameter type travels: as its owned form, lent back to the method
/// on the server (`&str` travels as a `String`, `&[T]` as a `Vec<T>`).
pub trait Arg<'a>: Sized {
    type Owned: DeserializeOwned + Send;

    fn lend(owned: &'a Self::Owned) -> Self;
}

impl<'a> Arg<'a> for &'a str {
    type Owned = String;

    fn lend(owned: &'a String) -> Self {
        owned
    }
}

impl<'a> Arg<'a> for Option<&'a str> {
    type Owned = Option<String>;

    fn lend(owned: &'a Option<String>) -> Self {
        owned.as_deref()
    }
}

impl<'a> Arg<'a> for Option<String> {
    type Owned = Option<String>;

    fn lend(owned: &'a Option<String>) -> Self {
        owned.clone()
    }
}

impl<'a> Arg<'a> for u64 {
    type Owned = u64;

    fn lend(owned: &'a u64) -> Self {
        *owned
    }
}

impl<'a, T: DeserializeOwned + Send + 'a> Arg<'a> for &'a [T] {
    type Owned = Vec<T>;

    fn lend(owned: &'a Vec<T>) -> Self {
        owned
    }
}

/// Request types passed by reference travel as themselves.
macro_rules! by_reference {
    ($($request:ty),* $(,)?) => {
        $(
            impl<'a> Arg<'a> for &'a $request {
                type Owned = $request;

                fn lend(owned: &'a $request) -> Self {
                    owned
                }
            }
        )*
    };
}

by_reference!(
    BuildRequest,
    DeploymentRequest,
    CommandRequest,
    TargetGroupSpec,
    ListenerSpec,
    HttpListenerSpec,
    ListenerAction,
    RuleSpec,
    CertificateMaterial,
);

#[cfg(test)]
mod tests {
    use reconcilers::cloud::{ErrorKind, Quota};

    use super::*;

    fn round_trip(reply: &Reply<Vec<String>>) -> Result<Vec<String>, CloudError> {
        let encoded = serde_json::to_string(reply).expect("encode");
        let decoded: Reply<Vec<String>> = serde_json::from_str(&encoded).expect("decode");
        decoded.into()
    }

    #[test]
    fn answers_and_errors_cross_the_wire_unchanged() {
        let arns = vec!["arn:1".to_owned()];
        assert_eq!(round_trip(&Reply::Ok(arns.clone())), Ok(arns));

        let quota = Quota::Other("rules per load balancer".to_owned());
        let error = CloudError::new(
            ErrorKind::QuotaExceeded(quota),
            "elasticloadbalancing:CreateRule",
            "TooManyRules: 100",
        );
        let first = round_trip(&Reply::Err(error.clone())).expect_err("an error");
        let second = round_trip(&Reply::Err(error.clone())).expect_err("an error");
        assert_eq!(first, error);
        assert!(
            std::ptr::eq(first.operation, second.operation),
            "an operation name read twice is interned once"
        );
    }

    #[test]
    fn the_wire_shape_is_ok_or_err() {
        let encoded = serde_json::to_value(Reply::<()>::Ok(())).expect("encode");
        assert_eq!(encoded, serde_json::json!({ "ok": null }));
        let error = CloudError::new(ErrorKind::NotFound, "acm:DescribeCertificate", "gone");
        let encoded = serde_json::to_value(Reply::<()>::Err(error)).expect("encode");
        assert_eq!(encoded["err"]["kind"], "NotFound");
        assert_eq!(encoded["err"]["operation"], "acm:DescribeCertificate");
    }

    #[test]
    fn arguments_are_lent_in_the_shape_the_trait_takes() {
        let version = Some("v1".to_owned());
        assert_eq!(<Option<&str> as Arg<'_>>::lend(&version), Some("v1"));
        let ids = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(<&[String] as Arg<'_>>::lend(&ids), ["a", "b"]);
    }
}
