//! OS patching of the EC2 fleets (issue #6): the policy of one fleet (an instance group or a
//! region's proxy fleet), the records of its runs, and the pure decisions the patch loop makes
//! from them: whether a run is due, whether it may go on now, and which instance comes next.
//!
//! A run patches one instance at a time and waits for it to be healthy before the next, so a
//! fleet is never fully down; it never starts with fewer than [`MIN_RUNNING`] instances running
//! and stops at the first failure, leaving the rest untouched.

use std::fmt;

use crate::config::{ConfigError, check_resource_name};
use crate::spec::RegionName;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// A fleet is patched only while this many of its instances run: the one being patched and at
/// least one other that keeps serving.
pub const MIN_RUNNING: usize = 2;

/// The script a policy runs when none is given: the distribution's package upgrade, for
/// Debian/Ubuntu (`apt-get`) and Amazon Linux (`dnf`, or `yum` on Amazon Linux 2).
pub const DEFAULT_SCRIPT: &str = "set -eu
if command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get -y -q -o Dpkg::Options::=--force-confold upgrade
elif command -v dnf >/dev/null 2>&1; then
  dnf -y upgrade
else
  yum -y update
fi";

/// The check a proxy passes after its patch before the next proxy is patched.
pub const PROXY_HEALTH_CHECK: &str = "nginx -t";

/// The longest script a policy may hold; SSM's whole document is limited to 64 KB.
const MAX_SCRIPT_BYTES: usize = 16 * 1024;

/// Which fleet a policy patches.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FleetId {
    /// An instance group, by name (its instances' `Name` tag).
    Group(String),
    /// The proxy (nginx) fleet of a region.
    Proxy(RegionName),
}

impl FleetId {
    /// Parses `group/<name>` or `proxy/<region>`, the form stored and shown.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let invalid = || ConfigError {
            field: "fleet",
            message: format!("{text:?} is neither group/<name> nor proxy/<region>"),
        };
        match text.split_once('/') {
            Some(("group", name)) => {
                check_resource_name("fleet", name)?;
                Ok(FleetId::Group(name.to_owned()))
            }
            Some(("proxy", region)) => RegionName::parse(region)
                .map(FleetId::Proxy)
                .map_err(|_| invalid()),
            _ => Err(invalid()),
        }
    }

    /// The key under which replicas claim the fleet in the lease table.
    pub fn lease_key(&self) -> String {
        format!("patch:{self}")
    }
}

impl fmt::Display for FleetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FleetId::Group(name) => write!(f, "group/{name}"),
            FleetId::Proxy(region) => write!(f, "proxy/{region}"),
        }
    }
}

/// A day of the week, Monday first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    pub const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Weekday::Mon => "mon",
            Weekday::Tue => "tue",
            Weekday::Wed => "wed",
            Weekday::Thu => "thu",
            Weekday::Fri => "fri",
            Weekday::Sat => "sat",
            Weekday::Sun => "sun",
        }
    }

    /// The UTC weekday of a day counted from the Unix epoch (a Thursday).
    fn of_epoch_day(day: i64) -> Weekday {
        Weekday::ALL[usize::try_from((day + 3).rem_euclid(7)).unwrap_or(0)]
    }
}

impl std::str::FromStr for Weekday {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, ConfigError> {
        const FULL: [&str; 7] = [
            "monday",
            "tuesday",
            "wednesday",
            "thursday",
            "friday",
            "saturday",
            "sunday",
        ];
        let lower = text.to_ascii_lowercase();
        Weekday::ALL
            .into_iter()
            .zip(FULL)
            .find(|(day, full)| lower == day.as_str() || lower == *full)
            .map(|(day, _)| day)
            .ok_or_else(|| ConfigError {
                field: "weekdays",
                message: format!("{text:?} is not a weekday (mon..sun)"),
            })
    }
}

/// When and how one fleet is patched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchPolicy {
    pub fleet: FleetId,
    /// The fleet's region (the group's, or the proxy fleet's own).
    pub region: RegionName,
    /// A disabled policy starts no run; a run in progress goes on to its end.
    pub enabled: bool,
    /// Days between the starts of two successful runs (1 is daily, 7 weekly).
    pub interval_days: u32,
    /// UTC hour (0-23) at which the window opens; a run starts and goes on only inside it.
    pub window_start_hour: u8,
    /// UTC hour (0-23) at which the window closes; before the start hour, it wraps past
    /// midnight.
    pub window_end_hour: u8,
    /// Days on which the window opens; empty means every day.
    pub weekdays: Vec<Weekday>,
    /// The shell script run on each instance through SSM; [`DEFAULT_SCRIPT`] when empty.
    pub script: String,
    /// How long one instance's patch may take.
    pub command_timeout_seconds: u32,
    pub updated_at: i64,
}

impl PatchPolicy {
    /// Checks the schedule, window and script.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: &str| {
            Err(ConfigError {
                field,
                message: message.to_owned(),
            })
        };
        if let FleetId::Proxy(region) = &self.fleet
            && region != &self.region
        {
            return invalid("region", "a proxy fleet's region is its own");
        }
        if !(1..=366).contains(&self.interval_days) {
            return invalid("interval_days", "must be 1 to 366 days");
        }
        if self.window_start_hour > 23 || self.window_end_hour > 23 {
            return invalid("window_start_hour", "window hours are 0 to 23 (UTC)");
        }
        if self.window_start_hour == self.window_end_hour {
            return invalid("window_end_hour", "the window must not be empty");
        }
        if self.script.len() > MAX_SCRIPT_BYTES || self.script.contains('\0') {
            return invalid("script", "must be at most 16 KiB of text");
        }
        if !(30..=86_400).contains(&self.command_timeout_seconds) {
            return invalid("command_timeout_seconds", "must be 30 to 86400 seconds");
        }
        Ok(())
    }

    /// The script's lines as SSM's `commands`.
    pub fn commands(&self) -> Vec<String> {
        let script = if self.script.trim().is_empty() {
            DEFAULT_SCRIPT
        } else {
            &self.script
        };
        script.lines().map(str::to_owned).collect()
    }

    fn window_hours(&self) -> i64 {
        let (start, end) = (
            i64::from(self.window_start_hour),
            i64::from(self.window_end_hour),
        );
        if end > start {
            end - start
        } else {
            end + 24 - start
        }
    }

    /// The start of the window occurrence holding `now`, if the window is open at `now`.
    pub fn window_open_at(&self, now: i64) -> Option<i64> {
        let day = now.div_euclid(DAY_MS);
        // The occurrence opened today, or yesterday for a window that wraps past midnight.
        [day, day - 1].into_iter().find_map(|day| {
            let opens = self.opening(day)?;
            (opens <= now && now < opens + self.window_hours() * HOUR_MS).then_some(opens)
        })
    }

    /// When the window opens on an epoch day, if it opens that day.
    fn opening(&self, day: i64) -> Option<i64> {
        let weekday = Weekday::of_epoch_day(day);
        let allowed = self.weekdays.is_empty() || self.weekdays.contains(&weekday);
        allowed.then(|| day * DAY_MS + i64::from(self.window_start_hour) * HOUR_MS)
    }

    /// Whether the window occurrence opening at `opens` may start a run: none was tried in it,
    /// and the last success is at least the interval (in window occurrences) behind.
    fn may_start_in(&self, opens: i64, history: &History) -> bool {
        let spacing = i64::from(self.interval_days.saturating_sub(1)) * DAY_MS;
        history.last_attempt.is_none_or(|at| at < opens)
            && history.last_success.is_none_or(|at| at < opens - spacing)
    }

    /// Whether a new run should start at `now`.
    pub fn due(&self, history: &History, now: i64) -> bool {
        self.enabled
            && self
                .window_open_at(now)
                .is_some_and(|opens| self.may_start_in(opens, history))
    }

    /// When the next run may start: the current window's opening when one is due now, else the
    /// next window opening that would be due. `None` for a disabled policy.
    pub fn next_due(&self, history: &History, now: i64) -> Option<i64> {
        if !self.enabled {
            return None;
        }
        if let Some(opens) = self.window_open_at(now)
            && self.may_start_in(opens, history)
        {
            return Some(opens);
        }
        let today = now.div_euclid(DAY_MS);
        let horizon = i64::from(self.interval_days) + 8;
        (today..=today + horizon)
            .filter_map(|day| self.opening(day))
            .find(|&opens| opens > now && self.may_start_in(opens, history))
    }
}

/// What the schedule needs to know of a fleet's past runs: when the last run of any outcome
/// started, and when the last successful one started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub last_attempt: Option<i64>,
    pub last_success: Option<i64>,
}

/// The state of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunState {
    Running,
    /// Every instance patched and healthy (or gone before its turn).
    Succeeded,
    /// An instance failed its patch or its health check; the rest were left untouched.
    Failed,
    /// Ended before its end for a reason that is not an instance's fault (too few instances
    /// left running, the policy or fleet removed).
    Stopped,
    /// Never started: too few instances were running.
    Refused,
}

/// The state of one instance in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InstanceState {
    /// The patch was sent and its result is not recorded yet.
    Patching,
    Succeeded,
    Failed,
    /// No longer running when its turn came.
    Skipped,
}

macro_rules! str_enum {
    ($type:ty, $what:literal, $($variant:ident => $text:literal),+ $(,)?) => {
        impl $type {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $type {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, String> {
                match text {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!("unknown {} {other:?}", $what)),
                }
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

str_enum!(RunState, "run state",
    Running => "running", Succeeded => "succeeded", Failed => "failed",
    Stopped => "stopped", Refused => "refused");
str_enum!(InstanceState, "instance state",
    Patching => "patching", Succeeded => "succeeded", Failed => "failed", Skipped => "skipped");

/// One instance's part of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceResult {
    pub instance_id: String,
    pub state: InstanceState,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// The tail of the command's output, or why it failed.
    pub output: String,
}

/// One patch run of a fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchRun {
    pub id: i64,
    pub fleet: FleetId,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub state: RunState,
    pub message: String,
    /// The instances the run patches, in order: those running when it started.
    pub instances: Vec<String>,
    /// Results of the instances whose turn came, in the run's order.
    pub results: Vec<InstanceResult>,
}

/// The most output kept per instance: the end, where errors are.
pub const OUTPUT_TAIL_BYTES: usize = 1000;

/// The last [`OUTPUT_TAIL_BYTES`] of `text`, cut at a character boundary.
pub fn tail(text: &str) -> &str {
    let mut start = text.len().saturating_sub(OUTPUT_TAIL_BYTES);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// The instances a new run patches, sorted; or why none may start.
pub fn plan_run(running: &[String]) -> Result<Vec<String>, String> {
    if running.len() < MIN_RUNNING {
        return Err(format!(
            "only {} running instance(s): at least {MIN_RUNNING} are needed so one keeps \
             serving while another is patched",
            running.len()
        ));
    }
    let mut instances = running.to_vec();
    instances.sort();
    instances.dedup();
    Ok(instances)
}

/// What a run does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Patch this instance, then wait for its health.
    Patch(String),
    /// This instance's patch was interrupted (a crash): check its health, never patch it
    /// again in this run.
    Recheck(String),
    /// This instance stopped running before its turn: record it skipped.
    Skip(String),
    /// Outside the window: leave the run as it is until the window opens again.
    Wait,
    /// Every instance is done.
    Finish,
    /// End the run in this state.
    Stop { state: RunState, message: String },
}

/// The next step of a run, from its recorded results and the instances running now.
pub fn next_step(run: &PatchRun, running: &[String], in_window: bool) -> Step {
    let result = |id: &str| run.results.iter().find(|r| r.instance_id == id);
    if let Some(failed) = run
        .results
        .iter()
        .find(|r| r.state == InstanceState::Failed)
    {
        return Step::Stop {
            state: RunState::Failed,
            message: format!("{} failed: {}", failed.instance_id, failed.output),
        };
    }
    for id in &run.instances {
        match result(id).map(|r| r.state) {
            Some(InstanceState::Succeeded | InstanceState::Skipped) => continue,
            Some(InstanceState::Patching) => return Step::Recheck(id.clone()),
            // A failed result stopped the run above.
            Some(InstanceState::Failed) => continue,
            None if !running.contains(id) => return Step::Skip(id.clone()),
            None if !in_window => return Step::Wait,
            None if running.len() < MIN_RUNNING => {
                return Step::Stop {
                    state: RunState::Stopped,
                    message: format!(
                        "only {} running instance(s) left; {id} and the rest were not patched",
                        running.len()
                    ),
                };
            }
            None => return Step::Patch(id.clone()),
        }
    }
    Step::Finish
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-01-01T00:00:00Z, a Monday.
    const MONDAY: i64 = 1_704_067_200_000;

    fn at(day: i64, hour: i64, minute: i64) -> i64 {
        MONDAY + day * DAY_MS + hour * HOUR_MS + minute * 60_000
    }

    fn policy(interval_days: u32, start: u8, end: u8, weekdays: &[Weekday]) -> PatchPolicy {
        PatchPolicy {
            fleet: FleetId::Group("shops-a".to_owned()),
            region: RegionName::parse("eu-west-1").expect("valid"),
            enabled: true,
            interval_days,
            window_start_hour: start,
            window_end_hour: end,
            weekdays: weekdays.to_vec(),
            script: String::new(),
            command_timeout_seconds: 1800,
            updated_at: 0,
        }
    }

    fn history(last_attempt: Option<i64>, last_success: Option<i64>) -> History {
        History {
            last_attempt,
            last_success,
        }
    }

    #[test]
    fn epoch_days_have_their_weekdays() {
        assert_eq!(Weekday::of_epoch_day(0), Weekday::Thu);
        assert_eq!(Weekday::of_epoch_day(MONDAY / DAY_MS), Weekday::Mon);
        assert_eq!(Weekday::of_epoch_day(MONDAY / DAY_MS + 6), Weekday::Sun);
        assert_eq!("Sunday".parse::<Weekday>(), Ok(Weekday::Sun));
        assert!("funday".parse::<Weekday>().is_err());
    }

    #[test]
    fn the_window_holds_its_hours_and_wraps_past_midnight() {
        let night = policy(1, 22, 4, &[]);
        let day = policy(1, 2, 5, &[]);
        let sunday_only = policy(7, 22, 2, &[Weekday::Sun]);
        let cases = [
            (&day, at(0, 2, 0), Some(at(0, 2, 0))),
            (&day, at(0, 4, 59), Some(at(0, 2, 0))),
            (&day, at(0, 5, 0), None),
            (&day, at(0, 1, 59), None),
            (&night, at(1, 23, 0), Some(at(1, 22, 0))),
            (&night, at(2, 3, 0), Some(at(1, 22, 0))),
            (&night, at(2, 4, 0), None),
            (&night, at(2, 12, 0), None),
            // Sunday 23:00 and Monday 01:00 belong to Sunday's window; Monday 23:00 does not.
            (&sunday_only, at(6, 23, 0), Some(at(6, 22, 0))),
            (&sunday_only, at(7, 1, 0), Some(at(6, 22, 0))),
            (&sunday_only, at(7, 23, 0), None),
        ];
        for (policy, now, expected) in cases {
            assert_eq!(policy.window_open_at(now), expected, "{now}");
        }
    }

    #[test]
    fn a_run_is_due_once_per_interval_inside_the_window() {
        let weekly = policy(7, 2, 4, &[]);
        let daily = policy(1, 2, 4, &[]);
        let sundays = policy(7, 2, 4, &[Weekday::Sun]);
        let mut disabled = policy(1, 2, 4, &[]);
        disabled.enabled = false;
        let monday_run = at(0, 2, 30);
        let cases = [
            (
                "never run, in window",
                &weekly,
                history(None, None),
                at(0, 3, 0),
                true,
            ),
            (
                "never run, outside",
                &weekly,
                history(None, None),
                at(0, 5, 0),
                false,
            ),
            (
                "disabled",
                &disabled,
                history(None, None),
                at(0, 3, 0),
                false,
            ),
            (
                "same window, tried",
                &weekly,
                history(Some(monday_run), None),
                at(0, 3, 0),
                false,
            ),
            (
                "same window, done",
                &daily,
                history(Some(monday_run), Some(monday_run)),
                at(0, 3, 30),
                false,
            ),
            (
                "daily, next day",
                &daily,
                history(Some(monday_run), Some(monday_run)),
                at(1, 2, 0),
                true,
            ),
            (
                "weekly, six days on",
                &weekly,
                history(Some(monday_run), Some(monday_run)),
                at(6, 3, 0),
                false,
            ),
            (
                "weekly, seven days on",
                &weekly,
                history(Some(monday_run), Some(monday_run)),
                at(7, 2, 0),
                true,
            ),
            // A failed run is tried again in the next window, not in its own.
            (
                "failed, next window",
                &weekly,
                history(Some(monday_run), None),
                at(1, 2, 0),
                true,
            ),
            (
                "sundays, on monday",
                &sundays,
                history(None, None),
                at(0, 3, 0),
                false,
            ),
            (
                "sundays, on sunday",
                &sundays,
                history(None, None),
                at(6, 3, 0),
                true,
            ),
        ];
        for (name, policy, history, now, expected) in cases {
            assert_eq!(policy.due(&history, now), expected, "{name}");
        }
    }

    #[test]
    fn the_next_due_time_is_the_next_window_that_would_start_a_run() {
        let weekly = policy(7, 2, 4, &[]);
        let sundays = policy(7, 2, 4, &[Weekday::Sun]);
        let done_monday = history(Some(at(0, 2, 30)), Some(at(0, 2, 30)));
        let cases = [
            (&weekly, history(None, None), at(0, 3, 0), Some(at(0, 2, 0))),
            (&weekly, history(None, None), at(0, 5, 0), Some(at(1, 2, 0))),
            (&weekly, done_monday, at(0, 3, 0), Some(at(7, 2, 0))),
            (
                &weekly,
                history(Some(at(0, 2, 30)), None),
                at(0, 3, 0),
                Some(at(1, 2, 0)),
            ),
            (&sundays, done_monday, at(0, 3, 0), Some(at(13, 2, 0))),
            (
                &sundays,
                history(None, None),
                at(0, 3, 0),
                Some(at(6, 2, 0)),
            ),
        ];
        for (policy, history, now, expected) in cases {
            assert_eq!(
                policy.next_due(&history, now),
                expected,
                "{history:?} {now}"
            );
        }
    }

    fn run(instances: &[&str], results: &[(&str, InstanceState)]) -> PatchRun {
        PatchRun {
            id: 1,
            fleet: FleetId::Group("shops-a".to_owned()),
            started_at: 0,
            finished_at: None,
            state: RunState::Running,
            message: String::new(),
            instances: instances.iter().map(|i| (*i).to_owned()).collect(),
            results: results
                .iter()
                .map(|(id, state)| InstanceResult {
                    instance_id: (*id).to_owned(),
                    state: *state,
                    started_at: 0,
                    finished_at: None,
                    output: "boom".to_owned(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_run_patches_one_instance_after_another_and_stops_at_a_failure() {
        use InstanceState::*;
        let all = ["i-1", "i-2", "i-3"];
        let running: Vec<String> = all.iter().map(|i| (*i).to_owned()).collect();
        let two = &running[..2];
        let one = &running[..1];
        let stop = |state, message: &str| Step::Stop {
            state,
            message: message.to_owned(),
        };
        let cases = [
            (
                "first",
                run(&all, &[]),
                &running[..],
                true,
                Step::Patch("i-1".into()),
            ),
            (
                "next",
                run(&all, &[("i-1", Succeeded)]),
                &running[..],
                true,
                Step::Patch("i-2".into()),
            ),
            (
                "outside window",
                run(&all, &[("i-1", Succeeded)]),
                &running[..],
                false,
                Step::Wait,
            ),
            (
                "interrupted",
                run(&all, &[("i-1", Patching)]),
                &running[..],
                false,
                Step::Recheck("i-1".into()),
            ),
            (
                "gone",
                run(&all, &[("i-1", Succeeded), ("i-2", Succeeded)]),
                two,
                true,
                Step::Skip("i-3".into()),
            ),
            (
                "done",
                run(
                    &all,
                    &[("i-1", Succeeded), ("i-2", Skipped), ("i-3", Succeeded)],
                ),
                &running[..],
                true,
                Step::Finish,
            ),
            (
                "failed",
                run(&all, &[("i-1", Succeeded), ("i-2", Failed)]),
                &running[..],
                true,
                stop(RunState::Failed, "i-2 failed: boom"),
            ),
            (
                "too few left",
                run(&all, &[("i-1", Succeeded)]),
                &running[1..2],
                true,
                stop(
                    RunState::Stopped,
                    "only 1 running instance(s) left; i-2 and the rest were not patched",
                ),
            ),
            (
                "alone",
                run(&["i-1", "i-2"], &[]),
                one,
                true,
                stop(
                    RunState::Stopped,
                    "only 1 running instance(s) left; i-1 and the rest were not patched",
                ),
            ),
        ];
        for (name, run, running, in_window, expected) in cases {
            assert_eq!(next_step(&run, running, in_window), expected, "{name}");
        }
    }

    #[test]
    fn a_run_needs_two_running_instances() {
        let ids = |list: &[&str]| list.iter().map(|i| (*i).to_owned()).collect::<Vec<_>>();
        assert!(plan_run(&ids(&[])).is_err());
        let refused = plan_run(&ids(&["i-1"])).expect_err("refused");
        assert!(refused.contains("only 1 running"), "{refused}");
        assert_eq!(plan_run(&ids(&["i-2", "i-1"])), Ok(ids(&["i-1", "i-2"])));
    }

    #[test]
    fn fleets_round_trip_and_policies_validate() {
        for text in ["group/shops-a", "proxy/eu-west-1"] {
            let fleet = FleetId::parse(text).expect(text);
            assert_eq!(fleet.to_string(), text);
        }
        for bad in ["shops-a", "group/", "proxy/Nowhere", "other/x", "group/a b"] {
            assert!(FleetId::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(policy(7, 2, 4, &[]).validate(), Ok(()));
        type Mutation = fn(&mut PatchPolicy);
        let cases: Vec<(Mutation, &str)> = vec![
            (|p| p.interval_days = 0, "interval_days"),
            (|p| p.window_start_hour = 24, "window_start_hour"),
            (
                |p| p.window_end_hour = p.window_start_hour,
                "window_end_hour",
            ),
            (|p| p.script = "x".repeat(20_000), "script"),
            (|p| p.command_timeout_seconds = 5, "command_timeout_seconds"),
            (
                |p| p.fleet = FleetId::Proxy(RegionName::parse("us-east-1").expect("valid")),
                "region",
            ),
        ];
        for (mutate, field) in cases {
            let mut p = policy(7, 2, 4, &[]);
            mutate(&mut p);
            assert_eq!(p.validate().map_err(|e| e.field), Err(field));
        }
    }

    #[test]
    fn the_default_script_runs_when_none_is_given() {
        let mut p = policy(7, 2, 4, &[]);
        assert_eq!(p.commands().join("\n"), DEFAULT_SCRIPT);
        p.script = "dnf -y upgrade\nreboot-if-needed".to_owned();
        assert_eq!(p.commands(), vec!["dnf -y upgrade", "reboot-if-needed"]);
        assert_eq!(tail(&"é".repeat(600)).len() % 2, 0);
        assert!(tail(&"x".repeat(5000)).len() <= OUTPUT_TAIL_BYTES);
    }
}
