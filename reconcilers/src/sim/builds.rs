//! CodeBuild in the simulated account. A build runs through CodeBuild's phases over
//! [`super::Timings::build`]; on success it copies the source version to the artifact location
//! in the simulated S3. It fails in DOWNLOAD_SOURCE when the source version is missing, in
//! UPLOAD_ARTIFACTS when the artifact bucket is, and wherever a test told it to.
//!
//! As in CodeBuild (a project without a concurrent build limit of its own), builds beyond the
//! account's concurrent builds wait in phase QUEUED and start, oldest first, as running ones
//! finish; the queue holds five times the concurrent builds, and a build beyond that is
//! refused with `AccountLimitExceededException`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use async_trait::async_trait;

use crate::cloud::{Build, BuildRequest, BuildStatus, Builds, CloudError, ErrorKind, Page, Quota};

use super::{SimulatedAws, State, error, paging};

/// CodeBuild's phases in order.
const PHASES: [&str; 11] = [
    "SUBMITTED",
    "QUEUED",
    "PROVISIONING",
    "DOWNLOAD_SOURCE",
    "INSTALL",
    "PRE_BUILD",
    "BUILD",
    "POST_BUILD",
    "UPLOAD_ARTIFACTS",
    "FINALIZING",
    "COMPLETED",
];

/// CodeBuild's queue holds this many times the concurrent builds.
const QUEUE_FACTOR: usize = 5;

/// How long CodeBuild remembers an idempotency token.
const TOKEN_LIFETIME: Duration = Duration::from_secs(5 * 60);

struct SimBuild {
    build: Build,
    request: BuildRequest,
    sequence: u64,
    /// When it left the queue and began to run; `None` while it is queued.
    started: Option<Duration>,
    /// The phase the build is going to fail in, if it is.
    fails_in: Option<&'static str>,
}

#[derive(Default)]
pub(crate) struct BuildsState {
    builds: BTreeMap<String, SimBuild>,
    sequence: u64,
    failing_sources: HashMap<String, &'static str>,
    failing_next: VecDeque<&'static str>,
    tokens: HashMap<String, (String, Duration)>,
}

/// The position of a phase name, or BUILD for names CodeBuild does not have.
fn phase_index(phase: &str) -> usize {
    PHASES.iter().position(|p| *p == phase).unwrap_or(6)
}

/// Moves running builds through their phases; finishes those whose time is up.
pub(crate) fn settle(state: &mut State) {
    let now = state.now();
    let duration = state.config.timings.build;
    let running: Vec<String> = state
        .builds
        .builds
        .iter()
        .filter(|(_, b)| b.is_running())
        .map(|(id, _)| id.clone())
        .collect();
    for id in running {
        advance_build(state, &id, now, duration);
    }
    // Slots freed: the oldest queued builds start now (settling runs on every call, so "now"
    // is at most one call after the slot freed).
    let free = state
        .config
        .quotas
        .concurrent_builds
        .saturating_sub(state.builds.active());
    let mut queued: Vec<(u64, String)> = state
        .builds
        .builds
        .iter()
        .filter(|(_, b)| b.is_queued())
        .map(|(id, b)| (b.sequence, id.clone()))
        .collect();
    queued.sort_unstable();
    for (_, id) in queued.into_iter().take(free) {
        if let Some(sim) = state.builds.builds.get_mut(&id) {
            sim.started = Some(now);
        }
        advance_build(state, &id, now, duration);
    }
}

fn advance_build(state: &mut State, id: &str, now: Duration, duration: Duration) {
    let Some(sim) = state.builds.builds.get_mut(id) else {
        return;
    };
    let Some(started) = sim.started else {
        return;
    };
    let elapsed = now.saturating_sub(started);
    let progress = elapsed.as_secs_f64() / duration.as_secs_f64().max(f64::EPSILON);
    let reached = ((progress * (PHASES.len() - 1) as f64) as usize).min(PHASES.len() - 1);
    if let Some(phase) = sim.fails_in.filter(|p| phase_index(p) <= reached) {
        sim.build.status = BuildStatus::Failed;
        sim.build.phase = phase.to_owned();
        return;
    }
    if reached < PHASES.len() - 1 {
        sim.build.phase = PHASES[reached].to_owned();
        return;
    }
    finish_build(state, id);
}

/// Uploads the artifact, or fails in UPLOAD_ARTIFACTS when its bucket is missing.
fn finish_build(state: &mut State, id: &str) {
    let Some(sim) = state.builds.builds.get_mut(id) else {
        return;
    };
    let request = &sim.request;
    let source = state.storage.get(
        &request.source_bucket,
        &request.source_key,
        Some(&request.source_version),
    );
    match source.cloned() {
        Some(data) if state.storage.bucket_exists(&request.artifact_bucket) => {
            let (bucket, key) = (&request.artifact_bucket, &request.artifact_key);
            state.storage.put(bucket, key, data);
            sim.build.artifact_location = Some(format!("s3://{bucket}/{key}"));
            sim.build.status = BuildStatus::Succeeded;
            sim.build.phase = "COMPLETED".to_owned();
        }
        // The source vanished after DOWNLOAD_SOURCE cannot happen in CodeBuild (it holds a
        // copy), so either way it is the upload that failed.
        _ => {
            sim.build.status = BuildStatus::Failed;
            sim.build.phase = "UPLOAD_ARTIFACTS".to_owned();
        }
    }
}

impl SimBuild {
    fn is_running(&self) -> bool {
        self.build.status == BuildStatus::InProgress && self.started.is_some()
    }

    fn is_queued(&self) -> bool {
        self.build.status == BuildStatus::InProgress && self.started.is_none()
    }
}

impl BuildsState {
    /// Builds running, not counting queued ones.
    fn active(&self) -> usize {
        self.builds.values().filter(|b| b.is_running()).count()
    }

    fn queued(&self) -> usize {
        self.builds.values().filter(|b| b.is_queued()).count()
    }

    /// The build an idempotency token started within its lifetime, if any.
    fn by_token(&self, token: &str, now: Duration) -> Option<&SimBuild> {
        let (id, at) = self.tokens.get(token)?;
        (now.saturating_sub(*at) < TOKEN_LIFETIME)
            .then(|| self.builds.get(id))
            .flatten()
    }
}

fn start(state: &mut State, request: &BuildRequest) -> Result<Build, CloudError> {
    const OPERATION: &str = "codebuild:StartBuild";
    let now = state.now();
    if let Some(existing) = state.builds.by_token(&request.idempotency_token, now) {
        if existing.request == *request {
            return Ok(existing.build.clone());
        }
        let message = "the idempotency token was used with other parameters";
        return Err(error(
            ErrorKind::Invalid,
            OPERATION,
            "IdempotentParameterMismatch",
            message,
        ));
    }
    validate(request)?;
    let concurrent = state.config.quotas.concurrent_builds;
    let runs_now = state.builds.active() < concurrent;
    if !runs_now && state.builds.queued() >= concurrent * QUEUE_FACTOR {
        return Err(error(
            ErrorKind::QuotaExceeded(Quota::Other("ConcurrentBuilds".to_owned())),
            OPERATION,
            "AccountLimitExceededException",
            "the build queue is full",
        ));
    }

    let id = format!("{}:{}", request.project, state.rng.uuid());
    let fails_in = planned_failure(state, request);
    state.builds.sequence += 1;
    let build = Build {
        id: id.clone(),
        project: request.project.clone(),
        status: BuildStatus::InProgress,
        phase: PHASES[if runs_now { 0 } else { 1 }].to_owned(),
        source_version: request.source_version.clone(),
        artifact_location: None,
        started_at: state.clock.epoch_millis(),
    };
    let sim = SimBuild {
        build: build.clone(),
        request: request.clone(),
        sequence: state.builds.sequence,
        started: runs_now.then_some(now),
        fails_in,
    };
    state.builds.builds.insert(id.clone(), sim);
    if !request.idempotency_token.is_empty() {
        let token = request.idempotency_token.clone();
        state.builds.tokens.insert(token, (id, now));
    }
    Ok(build)
}

fn validate(request: &BuildRequest) -> Result<(), CloudError> {
    let required = [
        ("project", &request.project),
        ("source bucket", &request.source_bucket),
        ("source key", &request.source_key),
        ("source version", &request.source_version),
        ("artifact bucket", &request.artifact_bucket),
        ("artifact key", &request.artifact_key),
    ];
    match required.iter().find(|(_, value)| value.is_empty()) {
        Some((field, _)) => Err(error(
            ErrorKind::Invalid,
            "codebuild:StartBuild",
            "InvalidInputException",
            format!("{field} must not be empty"),
        )),
        None => Ok(()),
    }
}

/// Where a new build will fail: a missing source fails in DOWNLOAD_SOURCE, then what tests
/// asked for.
fn planned_failure(state: &mut State, request: &BuildRequest) -> Option<&'static str> {
    let source = state.storage.get(
        &request.source_bucket,
        &request.source_key,
        Some(&request.source_version),
    );
    if source.is_none() {
        return Some("DOWNLOAD_SOURCE");
    }
    let failures = &mut state.builds;
    failures
        .failing_sources
        .get(&request.source_version)
        .copied()
        .or_else(|| failures.failing_next.pop_front())
}

/// Test controls for CodeBuild.
impl SimulatedAws {
    /// Builds of this source version fail in `phase` (such as `BUILD`), from now on.
    pub fn fail_builds_of(&self, source_version: &str, phase: &str) {
        let phase = PHASES[phase_index(phase)];
        let mut state = self.state();
        let failing = &mut state.builds.failing_sources;
        failing.insert(source_version.to_owned(), phase);
    }

    /// The next `count` builds started fail in `phase`.
    pub fn fail_next_builds(&self, count: usize, phase: &str) {
        let phase = PHASES[phase_index(phase)];
        let mut state = self.state();
        let failing = &mut state.builds.failing_next;
        failing.extend(std::iter::repeat_n(phase, count));
    }
}

#[async_trait]
impl Builds for SimulatedAws {
    async fn start_build(&self, request: &BuildRequest) -> Result<Build, CloudError> {
        self.call("codebuild:StartBuild", |state: &mut State| {
            start(state, request)
        })
        .await
    }

    async fn batch_get_builds(&self, ids: &[String]) -> Result<Vec<Build>, CloudError> {
        const OPERATION: &str = "codebuild:BatchGetBuilds";
        self.call(OPERATION, |state: &mut State| {
            if ids.len() > paging::BATCH_GET_BUILDS {
                let message = "at most 100 build ids per call";
                return Err(error(
                    ErrorKind::Invalid,
                    OPERATION,
                    "InvalidInputException",
                    message,
                ));
            }
            let builds = ids.iter().filter_map(|id| state.builds.builds.get(id));
            Ok(builds.map(|b| b.build.clone()).collect())
        })
        .await
    }

    async fn list_build_ids(
        &self,
        project: &str,
        next_token: Option<String>,
    ) -> Result<Page<String>, CloudError> {
        const OPERATION: &str = "codebuild:ListBuildsForProject";
        self.call(OPERATION, |state: &mut State| {
            let items = state
                .builds
                .builds
                .values()
                .filter(|b| b.build.project == project)
                .map(|b| (paging::newest_first(b.sequence), b.build.id.clone()))
                .collect();
            let size = paging::LIST_BUILDS_FOR_PROJECT;
            paging::page(OPERATION, items, next_token.as_deref(), size)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::ObjectStorage;
    use crate::sim::SimConfig;

    fn request(aws: &SimulatedAws, token: &str) -> BuildRequest {
        aws.create_bucket("artifacts");
        let source_version = aws.put_object("sources", "a.zip", &b"zip"[..]);
        BuildRequest {
            project: "shop-build".to_owned(),
            source_bucket: "sources".to_owned(),
            source_key: "a.zip".to_owned(),
            source_version,
            artifact_bucket: "artifacts".to_owned(),
            artifact_key: "a/artifact.zip".to_owned(),
            environment: vec![],
            idempotency_token: token.to_owned(),
        }
    }

    fn aws() -> SimulatedAws {
        SimulatedAws::with_config(SimConfig::manual())
    }

    async fn build_after(aws: &SimulatedAws, id: &str, wait: Duration) -> Build {
        aws.advance(wait);
        let builds = aws.batch_get_builds(&[id.to_owned()]).await.expect("got");
        builds.into_iter().next().expect("known id")
    }

    #[tokio::test]
    async fn a_build_succeeds_after_its_duration_and_writes_the_artifact() {
        let aws = aws();
        let request = request(&aws, "t1");

        let started = aws.start_build(&request).await.expect("started");
        let halfway = build_after(&aws, &started.id, Duration::from_secs(30)).await;
        let done = build_after(&aws, &started.id, Duration::from_secs(30)).await;

        assert!(started.id.starts_with("shop-build:"));
        assert_eq!(halfway.status, BuildStatus::InProgress);
        assert_eq!(halfway.phase, "PRE_BUILD");
        assert_eq!(done.status, BuildStatus::Succeeded);
        assert_eq!(
            done.artifact_location.as_deref(),
            Some("s3://artifacts/a/artifact.zip")
        );
        let head = aws.head_object("artifacts", "a/artifact.zip", None).await;
        assert_eq!(head.map(|h| h.size), Ok(3));
    }

    #[tokio::test]
    async fn builds_fail_where_they_are_told_or_where_aws_would() {
        let aws = aws();
        let told = request(&aws, "t1");
        aws.fail_builds_of(&told.source_version, "BUILD");
        let missing_source = BuildRequest {
            source_version: "v-gone".to_owned(),
            idempotency_token: "t2".to_owned(),
            ..told.clone()
        };
        let missing_bucket = BuildRequest {
            artifact_bucket: "no-such-bucket".to_owned(),
            idempotency_token: "t3".to_owned(),
            ..request(&aws, "t3")
        };
        let cases = [(told, "BUILD"), (missing_source, "DOWNLOAD_SOURCE")];
        let cases = cases
            .into_iter()
            .chain([(missing_bucket, "UPLOAD_ARTIFACTS")]);

        for (request, phase) in cases {
            let started = aws.start_build(&request).await.expect("started");
            let done = build_after(&aws, &started.id, Duration::from_secs(60)).await;
            assert_eq!(
                (done.status, done.phase.as_str()),
                (BuildStatus::Failed, phase)
            );
            assert_eq!(done.artifact_location, None);
        }
        assert_eq!(aws.object("no-such-bucket", "a/artifact.zip"), None);
    }

    #[tokio::test]
    async fn the_next_builds_can_be_told_to_fail() {
        let aws = aws();
        aws.fail_next_builds(1, "POST_BUILD");
        let first = aws
            .start_build(&request(&aws, "t1"))
            .await
            .expect("started");
        let second = aws
            .start_build(&request(&aws, "t2"))
            .await
            .expect("started");

        aws.advance(Duration::from_secs(60));
        let ids = [first.id, second.id];
        let builds = aws.batch_get_builds(&ids).await.expect("got");

        let statuses: Vec<BuildStatus> = builds.iter().map(|b| b.status).collect();
        assert_eq!(statuses, vec![BuildStatus::Failed, BuildStatus::Succeeded]);
        assert_eq!(builds[0].phase, "POST_BUILD");
    }

    #[tokio::test]
    async fn an_idempotency_token_returns_the_same_build_for_five_minutes() {
        let aws = aws();
        let request = request(&aws, "token");
        let first = aws.start_build(&request).await.expect("started");

        let again = aws.start_build(&request).await.expect("same build");
        let changed = BuildRequest {
            artifact_key: "other.zip".to_owned(),
            ..request.clone()
        };
        let mismatch = aws.start_build(&changed).await.expect_err("mismatch");
        aws.advance(Duration::from_secs(301));
        let later = aws.start_build(&request).await.expect("new build");

        assert_eq!(again.id, first.id);
        assert_eq!(mismatch.kind, ErrorKind::Invalid);
        assert_ne!(later.id, first.id);
    }

    #[tokio::test]
    async fn build_ids_are_listed_newest_first_in_pages_of_a_hundred() {
        let aws = aws();
        let mut started = Vec::new();
        for i in 0..150 {
            let build = aws.start_build(&request(&aws, &format!("t{i}"))).await;
            started.push(build.expect("started").id);
            aws.advance(Duration::from_secs(61));
        }

        let first = aws.list_build_ids("shop-build", None).await.expect("page");
        let second = aws
            .list_build_ids("shop-build", first.next_token.clone())
            .await
            .expect("page");

        assert_eq!((first.items.len(), second.items.len()), (100, 50));
        assert_eq!(second.next_token, None);
        assert_eq!(first.items[0], started[149]);
        assert_eq!(aws.call_count("codebuild:ListBuildsForProject"), 2);
        let other = aws.list_build_ids("other", None).await.expect("page");
        assert!(other.items.is_empty());
    }

    #[tokio::test]
    async fn batch_get_takes_at_most_a_hundred_ids_and_skips_unknown_ones() {
        let aws = aws();
        let too_many: Vec<String> = (0..101).map(|i| format!("p:{i}")).collect();
        let error = aws.batch_get_builds(&too_many).await.expect_err("too many");
        assert_eq!(error.kind, ErrorKind::Invalid);
        assert_eq!(aws.batch_get_builds(&too_many[..100]).await, Ok(vec![]));
    }

    #[tokio::test]
    async fn builds_beyond_the_concurrent_quota_queue_and_start_as_slots_free() {
        let mut config = SimConfig::manual();
        config.quotas.concurrent_builds = 2;
        let aws = SimulatedAws::with_config(config);
        let mut ids = Vec::new();
        for token in ["a", "b", "c"] {
            ids.push(
                aws.start_build(&request(&aws, token))
                    .await
                    .expect("room")
                    .id,
            );
        }
        let phases =
            |builds: Vec<Build>| -> Vec<String> { builds.into_iter().map(|b| b.phase).collect() };
        let now = aws.batch_get_builds(&ids).await.expect("read");
        assert_eq!(phases(now), ["SUBMITTED", "SUBMITTED", "QUEUED"]);

        // The queue holds five times the concurrent builds (10 here): 9 more fit, not 10.
        for i in 0..9 {
            let token = format!("q{i}");
            aws.start_build(&request(&aws, &token))
                .await
                .expect("queued");
        }
        let error = aws
            .start_build(&request(&aws, "full"))
            .await
            .expect_err("queue full");
        assert!(matches!(error.kind, ErrorKind::QuotaExceeded(_)));

        // The first two finish within the build time; the third then runs its own.
        aws.advance(Duration::from_secs(60));
        let after = aws.batch_get_builds(&ids).await.expect("read");
        assert_eq!(after[0].status, BuildStatus::Succeeded);
        assert_eq!(after[1].status, BuildStatus::Succeeded);
        assert_eq!(after[2].status, BuildStatus::InProgress);
        assert_ne!(after[2].phase, "QUEUED");
        aws.advance(Duration::from_secs(60));
        let last = aws.batch_get_builds(&ids[2..]).await.expect("read");
        assert_eq!(last[0].status, BuildStatus::Succeeded);
    }
}
