//! [`LoadBalancing`] over Elastic Load Balancing v2: the shops' NLB target groups and
//! listeners and the proxy ALB's listener certificates. Reads go by batches of ARNs and follow
//! `NextMarker` to the last page, so a resync costs a few calls per load balancer. Converting
//! between SDK types and ours lives in `convert`; the ALB's HTTP listener and its rules in
//! `rules`.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, Certificate, ProtocolEnum, TargetTypeEnum,
};
use reconcilers::cloud::{
    CloudError, ErrorKind, HttpListenerSpec, Listener, ListenerAction, ListenerRule, ListenerSpec,
    LoadBalancer, LoadBalancing, RuleSpec, Tag, Target, TargetGroup, TargetGroupSpec, TargetHealth,
};

use super::calls::{Calls, all_pages};
use convert::{
    elb_tags, listener_of, load_balancer_of, tag_of, target_descriptions, target_group_of,
    target_health_of, to_i32,
};

mod convert;
mod rules;

/// Describe calls take at most 20 ARNs.
const ARN_BATCH: usize = 20;

/// The Elastic Load Balancing v2 client of one region.
pub struct ElbLoadBalancing {
    client: aws_sdk_elasticloadbalancingv2::Client,
    calls: Arc<Calls>,
}

impl ElbLoadBalancing {
    pub(crate) fn new(client: aws_sdk_elasticloadbalancingv2::Client, calls: Arc<Calls>) -> Self {
        Self { client, calls }
    }

    /// Target groups of one batch of ARNs, or of the whole region when `arns` is `None`.
    async fn target_groups(&self, arns: Option<&[String]>) -> Result<Vec<TargetGroup>, CloudError> {
        all_pages(|marker| async move {
            let call = self
                .client
                .describe_target_groups()
                .set_target_group_arns(arns.map(<[String]>::to_vec))
                .set_marker(marker)
                .send();
            let page = self
                .calls
                .run("elasticloadbalancing:DescribeTargetGroups", call)
                .await?;
            let items = page.target_groups().iter().map(target_group_of).collect();
            Ok((items, page.next_marker().map(str::to_owned)))
        })
        .await
    }
}

#[async_trait]
impl LoadBalancing for ElbLoadBalancing {
    async fn describe_load_balancers(
        &self,
        arns: &[String],
    ) -> Result<Vec<LoadBalancer>, CloudError> {
        let mut load_balancers = Vec::with_capacity(arns.len());
        for batch in arns.chunks(ARN_BATCH) {
            let page = all_pages(|marker| async move {
                let call = self
                    .client
                    .describe_load_balancers()
                    .set_load_balancer_arns(Some(batch.to_vec()))
                    .set_marker(marker)
                    .send();
                let page = self
                    .calls
                    .run("elasticloadbalancing:DescribeLoadBalancers", call)
                    .await?;
                let items = page.load_balancers().iter().map(load_balancer_of).collect();
                Ok((items, page.next_marker().map(str::to_owned)))
            })
            .await?;
            load_balancers.extend(page);
        }
        Ok(load_balancers)
    }

    async fn describe_target_groups(
        &self,
        arns: &[String],
    ) -> Result<Vec<TargetGroup>, CloudError> {
        // No ARNs would describe every target group of the region: answer without a call.
        let mut target_groups = Vec::with_capacity(arns.len());
        for batch in arns.chunks(ARN_BATCH) {
            target_groups.extend(self.target_groups(Some(batch)).await?);
        }
        Ok(target_groups)
    }

    async fn list_target_groups(&self) -> Result<Vec<TargetGroup>, CloudError> {
        self.target_groups(None).await
    }

    async fn create_target_group(&self, spec: &TargetGroupSpec) -> Result<TargetGroup, CloudError> {
        let operation = "elasticloadbalancing:CreateTargetGroup";
        let health = &spec.health_check;
        let call = self
            .client
            .create_target_group()
            .name(&spec.name)
            .protocol(ProtocolEnum::Tcp)
            .port(i32::from(spec.port))
            .vpc_id(&spec.vpc_id)
            .target_type(TargetTypeEnum::Instance)
            .health_check_protocol(ProtocolEnum::from(health.protocol.as_str()))
            .health_check_interval_seconds(to_i32(health.interval_seconds))
            .healthy_threshold_count(to_i32(health.healthy_threshold))
            .unhealthy_threshold_count(to_i32(health.unhealthy_threshold))
            .set_tags(Some(elb_tags(&spec.tags)))
            .send();
        let output = self.calls.run(operation, call).await?;
        output
            .target_groups()
            .first()
            .map(target_group_of)
            .ok_or_else(|| CloudError::new(ErrorKind::Other, operation, "no target group"))
    }

    async fn delete_target_group(&self, arn: &str) -> Result<(), CloudError> {
        let call = self
            .client
            .delete_target_group()
            .target_group_arn(arn)
            .send();
        self.calls
            .run("elasticloadbalancing:DeleteTargetGroup", call)
            .await?;
        Ok(())
    }

    async fn register_targets(
        &self,
        target_group_arn: &str,
        targets: &[Target],
    ) -> Result<(), CloudError> {
        if targets.is_empty() {
            return Ok(());
        }
        let call = self
            .client
            .register_targets()
            .target_group_arn(target_group_arn)
            .set_targets(Some(target_descriptions(targets)))
            .send();
        self.calls
            .run("elasticloadbalancing:RegisterTargets", call)
            .await?;
        Ok(())
    }

    async fn deregister_targets(
        &self,
        target_group_arn: &str,
        targets: &[Target],
    ) -> Result<(), CloudError> {
        if targets.is_empty() {
            return Ok(());
        }
        let call = self
            .client
            .deregister_targets()
            .target_group_arn(target_group_arn)
            .set_targets(Some(target_descriptions(targets)))
            .send();
        self.calls
            .run("elasticloadbalancing:DeregisterTargets", call)
            .await?;
        Ok(())
    }

    async fn describe_target_health(
        &self,
        target_group_arn: &str,
    ) -> Result<Vec<TargetHealth>, CloudError> {
        let call = self
            .client
            .describe_target_health()
            .target_group_arn(target_group_arn)
            .send();
        let output = self
            .calls
            .run("elasticloadbalancing:DescribeTargetHealth", call)
            .await?;
        Ok(output
            .target_health_descriptions()
            .iter()
            .map(target_health_of)
            .collect())
    }

    async fn describe_listeners(
        &self,
        load_balancer_arn: &str,
    ) -> Result<Vec<Listener>, CloudError> {
        all_pages(|marker| async move {
            let call = self
                .client
                .describe_listeners()
                .load_balancer_arn(load_balancer_arn)
                .set_marker(marker)
                .send();
            let page = self
                .calls
                .run("elasticloadbalancing:DescribeListeners", call)
                .await?;
            let items = page.listeners().iter().map(listener_of).collect();
            Ok((items, page.next_marker().map(str::to_owned)))
        })
        .await
    }

    async fn create_listener(&self, spec: &ListenerSpec) -> Result<Listener, CloudError> {
        let operation = "elasticloadbalancing:CreateListener";
        let forward = Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .target_group_arn(&spec.target_group_arn)
            .build();
        let call = self
            .client
            .create_listener()
            .load_balancer_arn(&spec.load_balancer_arn)
            .port(i32::from(spec.port))
            .protocol(ProtocolEnum::from(spec.protocol.as_str()))
            .default_actions(forward)
            .set_tags(Some(elb_tags(&spec.tags)))
            .send();
        let output = self.calls.run(operation, call).await?;
        output
            .listeners()
            .first()
            .map(listener_of)
            .ok_or_else(|| CloudError::new(ErrorKind::Other, operation, "no listener"))
    }

    async fn delete_listener(&self, arn: &str) -> Result<(), CloudError> {
        let call = self.client.delete_listener().listener_arn(arn).send();
        self.calls
            .run("elasticloadbalancing:DeleteListener", call)
            .await?;
        Ok(())
    }

    async fn create_http_listener(&self, spec: &HttpListenerSpec) -> Result<Listener, CloudError> {
        self.create_http(spec).await
    }

    async fn modify_listener_default_action(
        &self,
        listener_arn: &str,
        action: &ListenerAction,
    ) -> Result<Listener, CloudError> {
        self.set_default_action(listener_arn, action).await
    }

    async fn describe_rules(&self, listener_arn: &str) -> Result<Vec<ListenerRule>, CloudError> {
        self.rules(listener_arn).await
    }

    async fn create_rule(&self, spec: &RuleSpec) -> Result<ListenerRule, CloudError> {
        self.new_rule(spec).await
    }

    async fn modify_rule(
        &self,
        rule_arn: &str,
        path_patterns: &[String],
        action: &ListenerAction,
    ) -> Result<ListenerRule, CloudError> {
        self.change_rule(rule_arn, path_patterns, action).await
    }

    async fn delete_rule(&self, rule_arn: &str) -> Result<(), CloudError> {
        self.remove_rule(rule_arn).await
    }

    async fn describe_listener_certificates(
        &self,
        listener_arn: &str,
    ) -> Result<Vec<String>, CloudError> {
        all_pages(|marker| async move {
            let call = self
                .client
                .describe_listener_certificates()
                .listener_arn(listener_arn)
                .set_marker(marker)
                .send();
            let page = self
                .calls
                .run("elasticloadbalancing:DescribeListenerCertificates", call)
                .await?;
            let items = page
                .certificates()
                .iter()
                .filter(|certificate| certificate.is_default() != Some(true))
                .filter_map(|certificate| certificate.certificate_arn().map(str::to_owned))
                .collect();
            Ok((items, page.next_marker().map(str::to_owned)))
        })
        .await
    }

    async fn add_listener_certificates(
        &self,
        listener_arn: &str,
        certificate_arns: &[String],
    ) -> Result<(), CloudError> {
        // The API takes one certificate per call.
        for arn in certificate_arns {
            let call = self
                .client
                .add_listener_certificates()
                .listener_arn(listener_arn)
                .certificates(Certificate::builder().certificate_arn(arn).build())
                .send();
            self.calls
                .run("elasticloadbalancing:AddListenerCertificates", call)
                .await?;
        }
        Ok(())
    }

    async fn remove_listener_certificates(
        &self,
        listener_arn: &str,
        certificate_arns: &[String],
    ) -> Result<(), CloudError> {
        // The API takes one certificate per call.
        for arn in certificate_arns {
            let call = self
                .client
                .remove_listener_certificates()
                .listener_arn(listener_arn)
                .certificates(Certificate::builder().certificate_arn(arn).build())
                .send();
            self.calls
                .run("elasticloadbalancing:RemoveListenerCertificates", call)
                .await?;
        }
        Ok(())
    }

    async fn describe_tags(&self, arns: &[String]) -> Result<Vec<(String, Vec<Tag>)>, CloudError> {
        let mut tags: HashMap<String, Vec<Tag>> = HashMap::with_capacity(arns.len());
        for batch in arns.chunks(ARN_BATCH) {
            let call = self
                .client
                .describe_tags()
                .set_resource_arns(Some(batch.to_vec()))
                .send();
            let output = self
                .calls
                .run("elasticloadbalancing:DescribeTags", call)
                .await?;
            for description in output.tag_descriptions() {
                let resource_tags = description.tags().iter().map(tag_of).collect();
                let arn = description.resource_arn().unwrap_or_default().to_owned();
                tags.insert(arn, resource_tags);
            }
        }
        Ok(arns
            .iter()
            .map(|arn| (arn.clone(), tags.remove(arn).unwrap_or_default()))
            .collect())
    }

    async fn add_tags(&self, arn: &str, tags: &[Tag]) -> Result<(), CloudError> {
        let call = self
            .client
            .add_tags()
            .resource_arns(arn)
            .set_tags(Some(elb_tags(tags)))
            .send();
        self.calls.run("elasticloadbalancing:AddTags", call).await?;
        Ok(())
    }
}
