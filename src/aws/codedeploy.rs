//! [`Deployments`] over CodeDeploy: deploy an artifact zip in S3 to a deployment group, read
//! deployments back, stop them, list a group's deployments for crash recovery.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_codedeploy::types::{
    BundleType, DeploymentInfo, DeploymentStatus as SdkStatus, RevisionLocation,
    RevisionLocationType, S3Location,
};
use reconcilers::cloud::{
    CloudError, Deployment, DeploymentRequest, DeploymentStatus, Deployments, ErrorKind, Page,
    Revision,
};

use super::calls::Calls;
use super::epoch_millis;
use super::error::code_of;

/// The CodeDeploy client of one region.
pub struct CodeDeployDeployments {
    client: aws_sdk_codedeploy::Client,
    calls: Arc<Calls>,
}

impl CodeDeployDeployments {
    pub(crate) fn new(client: aws_sdk_codedeploy::Client, calls: Arc<Calls>) -> Self {
        Self { client, calls }
    }
}

#[async_trait]
impl Deployments for CodeDeployDeployments {
    async fn create_deployment(
        &self,
        request: &DeploymentRequest,
    ) -> Result<Deployment, CloudError> {
        let call = self
            .client
            .create_deployment()
            .application_name(&request.application)
            .deployment_group_name(&request.deployment_group)
            .revision(revision_location(&request.revision))
            .description(&request.description)
            .send();
        let output = self.calls.run("codedeploy:CreateDeployment", call).await?;
        // The answer holds only the id; the rest is what we asked for, in its first state.
        Ok(Deployment {
            id: output.deployment_id().unwrap_or_default().to_owned(),
            application: request.application.clone(),
            deployment_group: request.deployment_group.clone(),
            revision: request.revision.clone(),
            status: DeploymentStatus::Created,
            error_message: None,
            created_at: aws_smithy_types::DateTime::from(std::time::SystemTime::now())
                .to_millis()
                .unwrap_or(0),
        })
    }

    async fn get_deployment(&self, id: &str) -> Result<Deployment, CloudError> {
        let operation = "codedeploy:GetDeployment";
        let call = self.client.get_deployment().deployment_id(id).send();
        let output = self.calls.run(operation, call).await?;
        let info = output.deployment_info().ok_or_else(|| {
            CloudError::new(
                ErrorKind::NotFound,
                operation,
                format!("no deployment {id}"),
            )
        })?;
        Ok(deployment_of(id, info))
    }

    async fn stop_deployment(&self, id: &str) -> Result<(), CloudError> {
        let call = async {
            match self.client.stop_deployment().deployment_id(id).send().await {
                Ok(_) => Ok(()),
                Err(e) if code_of(&e) == Some("DeploymentAlreadyCompletedException") => Ok(()),
                Err(e) => Err(e),
            }
        };
        self.calls.run("codedeploy:StopDeployment", call).await
    }

    async fn list_deployment_ids(
        &self,
        application: &str,
        deployment_group: &str,
        statuses: &[DeploymentStatus],
        next_token: Option<String>,
    ) -> Result<Page<String>, CloudError> {
        // An empty filter means every state; sending an empty list could mean none.
        let statuses = (!statuses.is_empty())
            .then(|| statuses.iter().map(|status| sdk_status(*status)).collect());
        let call = self
            .client
            .list_deployments()
            .application_name(application)
            .deployment_group_name(deployment_group)
            .set_include_only_statuses(statuses)
            .set_next_token(next_token)
            .send();
        let output = self.calls.run("codedeploy:ListDeployments", call).await?;
        Ok(Page {
            items: output.deployments().to_vec(),
            next_token: output.next_token().map(str::to_owned),
        })
    }
}

fn revision_location(revision: &Revision) -> RevisionLocation {
    let s3 = S3Location::builder()
        .bucket(&revision.bucket)
        .key(&revision.key)
        .bundle_type(BundleType::Zip)
        .set_version(revision.version.clone())
        .build();
    RevisionLocation::builder()
        .revision_type(RevisionLocationType::S3)
        .s3_location(s3)
        .build()
}

fn deployment_of(id: &str, info: &DeploymentInfo) -> Deployment {
    let s3 = info.revision().and_then(RevisionLocation::s3_location);
    Deployment {
        id: info.deployment_id().unwrap_or(id).to_owned(),
        application: info.application_name().unwrap_or_default().to_owned(),
        deployment_group: info.deployment_group_name().unwrap_or_default().to_owned(),
        revision: Revision {
            bucket: s3
                .and_then(S3Location::bucket)
                .unwrap_or_default()
                .to_owned(),
            key: s3.and_then(S3Location::key).unwrap_or_default().to_owned(),
            version: s3.and_then(S3Location::version).map(str::to_owned),
        },
        status: status_of(info.status()),
        error_message: info
            .error_information()
            .and_then(|error| error.message())
            .map(str::to_owned),
        created_at: info.create_time().map_or(0, epoch_millis),
    }
}

/// A status this SDK does not know yet counts as active, so nobody starts a second deployment.
fn status_of(status: Option<&SdkStatus>) -> DeploymentStatus {
    match status {
        Some(SdkStatus::Created) => DeploymentStatus::Created,
        Some(SdkStatus::Queued) => DeploymentStatus::Queued,
        Some(SdkStatus::Baking) => DeploymentStatus::Baking,
        Some(SdkStatus::Ready) => DeploymentStatus::Ready,
        Some(SdkStatus::Succeeded) => DeploymentStatus::Succeeded,
        Some(SdkStatus::Failed) => DeploymentStatus::Failed,
        Some(SdkStatus::Stopped) => DeploymentStatus::Stopped,
        _ => DeploymentStatus::InProgress,
    }
}

fn sdk_status(status: DeploymentStatus) -> SdkStatus {
    match status {
        DeploymentStatus::Created => SdkStatus::Created,
        DeploymentStatus::Queued => SdkStatus::Queued,
        DeploymentStatus::InProgress => SdkStatus::InProgress,
        DeploymentStatus::Baking => SdkStatus::Baking,
        DeploymentStatus::Ready => SdkStatus::Ready,
        DeploymentStatus::Succeeded => SdkStatus::Succeeded,
        DeploymentStatus::Failed => SdkStatus::Failed,
        DeploymentStatus::Stopped => SdkStatus::Stopped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        let all = [
            DeploymentStatus::Created,
            DeploymentStatus::Queued,
            DeploymentStatus::InProgress,
            DeploymentStatus::Baking,
            DeploymentStatus::Ready,
            DeploymentStatus::Succeeded,
            DeploymentStatus::Failed,
            DeploymentStatus::Stopped,
        ];
        for status in all {
            assert_eq!(status_of(Some(&sdk_status(status))), status);
        }
    }

    #[test]
    fn revisions_are_zips_in_s3_and_read_back() {
        let revision = Revision {
            bucket: "artifacts".to_owned(),
            key: "shops/a.zip".to_owned(),
            version: Some("v7".to_owned()),
        };
        let location = revision_location(&revision);
        let info = DeploymentInfo::builder()
            .deployment_id("d-1")
            .application_name("shops")
            .deployment_group_name("proxy")
            .revision(location.clone())
            .status(SdkStatus::Failed)
            .error_information(
                aws_sdk_codedeploy::types::ErrorInformation::builder()
                    .message("script failed")
                    .build(),
            )
            .build();

        let deployment = deployment_of("d-1", &info);

        assert_eq!(location.revision_type(), Some(&RevisionLocationType::S3));
        let s3 = location.s3_location().expect("s3 location");
        assert_eq!(s3.bundle_type(), Some(&BundleType::Zip));
        assert_eq!(deployment.revision, revision);
        assert_eq!(deployment.status, DeploymentStatus::Failed);
        assert_eq!(deployment.error_message.as_deref(), Some("script failed"));
    }
}
