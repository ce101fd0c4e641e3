//! The proxy ALB's HTTP listener and its rules (the ACME HTTP-01 path, #5): create the
//! listener with a redirect or forward default action, change that action, and list, create,
//! change and delete rules matching path patterns. [`super::ElbLoadBalancing`]'s trait
//! implementation calls these.

use aws_sdk_elasticloadbalancingv2::types::ProtocolEnum;
use reconcilers::cloud::{
    CloudError, ErrorKind, HttpListenerSpec, Listener, ListenerAction, ListenerRule, RuleSpec,
};

use super::ElbLoadBalancing;
use super::convert::{elb_tags, listener_of, path_condition, rule_of, sdk_action};
use crate::aws::calls::all_pages;

impl ElbLoadBalancing {
    pub(super) async fn create_http(
        &self,
        spec: &HttpListenerSpec,
    ) -> Result<Listener, CloudError> {
        let operation = "elasticloadbalancing:CreateListener";
        let action = sdk_action(operation, &spec.default_action)?;
        let call = self
            .client
            .create_listener()
            .load_balancer_arn(&spec.load_balancer_arn)
            .port(i32::from(spec.port))
            .protocol(ProtocolEnum::Http)
            .default_actions(action)
            .set_tags(Some(elb_tags(&spec.tags)))
            .send();
        let output = self.calls.run(operation, call).await?;
        output
            .listeners()
            .first()
            .map(listener_of)
            .ok_or_else(|| CloudError::new(ErrorKind::Other, operation, "no listener"))
    }

    pub(super) async fn set_default_action(
        &self,
        listener_arn: &str,
        action: &ListenerAction,
    ) -> Result<Listener, CloudError> {
        let operation = "elasticloadbalancing:ModifyListener";
        let call = self
            .client
            .modify_listener()
            .listener_arn(listener_arn)
            .default_actions(sdk_action(operation, action)?)
            .send();
        let output = self.calls.run(operation, call).await?;
        output
            .listeners()
            .first()
            .map(listener_of)
            .ok_or_else(|| CloudError::new(ErrorKind::Other, operation, "no listener"))
    }

    pub(super) async fn rules(&self, listener_arn: &str) -> Result<Vec<ListenerRule>, CloudError> {
        all_pages(|marker| async move {
            let call = self
                .client
                .describe_rules()
                .listener_arn(listener_arn)
                .set_marker(marker)
                .send();
            let page = self
                .calls
                .run("elasticloadbalancing:DescribeRules", call)
                .await?;
            let items = page.rules().iter().map(rule_of).collect();
            Ok((items, page.next_marker().map(str::to_owned)))
        })
        .await
    }

    pub(super) async fn new_rule(&self, spec: &RuleSpec) -> Result<ListenerRule, CloudError> {
        let operation = "elasticloadbalancing:CreateRule";
        let priority = i32::try_from(spec.priority).unwrap_or(i32::MAX);
        let call = self
            .client
            .create_rule()
            .listener_arn(&spec.listener_arn)
            .priority(priority)
            .conditions(path_condition(&spec.path_patterns))
            .actions(sdk_action(operation, &spec.action)?)
            .set_tags(Some(elb_tags(&spec.tags)))
            .send();
        let output = self.calls.run(operation, call).await?;
        output
            .rules()
            .first()
            .map(rule_of)
            .ok_or_else(|| CloudError::new(ErrorKind::Other, operation, "no rule"))
    }

    pub(super) async fn change_rule(
        &self,
        rule_arn: &str,
        path_patterns: &[String],
        action: &ListenerAction,
    ) -> Result<ListenerRule, CloudError> {
        let operation = "elasticloadbalancing:ModifyRule";
        let call = self
            .client
            .modify_rule()
            .rule_arn(rule_arn)
            .conditions(path_condition(path_patterns))
            .actions(sdk_action(operation, action)?)
            .send();
        let output = self.calls.run(operation, call).await?;
        output
            .rules()
            .first()
            .map(rule_of)
            .ok_or_else(|| CloudError::new(ErrorKind::Other, operation, "no rule"))
    }

    pub(super) async fn remove_rule(&self, rule_arn: &str) -> Result<(), CloudError> {
        let call = self.client.delete_rule().rule_arn(rule_arn).send();
        self.calls
            .run("elasticloadbalancing:DeleteRule", call)
            .await?;
        Ok(())
    }
}
