//! `shopctl`'s output: a table or text for people, JSON for scripts, and YAML for a config
//! read back with `get`. Turning the API's enums and timestamps into words and milliseconds
//! happens here only.

use serde_json::{Value, json};
use shop_controller::grpc::proto::*;

use crate::cli::{GroupFile, Output, RegionFile};

pub(crate) fn yaml(value: &Value) -> String {
    serde_norway::to_string(value).unwrap_or_else(|_| value.to_string())
}

#[expect(clippy::print_stdout, reason = "shopctl's output is its job")]
pub(crate) fn print(output: Output, text: &str, value: &Value) {
    match output {
        Output::Table => println!("{}", text.trim_end()),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        ),
    }
}

fn time(timestamp: Option<&prost_types::Timestamp>) -> Value {
    match timestamp {
        Some(t) if t.seconds != 0 || t.nanos != 0 => {
            json!(t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
        }
        _ => Value::Null,
    }
}

fn enum_name(name: Option<&str>, prefix: &str) -> String {
    name.map(|n| n.trim_start_matches(prefix).to_lowercase())
        .unwrap_or_default()
}

fn ready(shop: &Shop) -> &'static str {
    let status = shop.status.as_ref();
    let ready = status.and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.r#type == ConditionType::Ready as i32)
    });
    match ready.map(|c| c.status) {
        Some(s) if s == ConditionStatus::True as i32 => "yes",
        Some(s) if s == ConditionStatus::False as i32 => "no",
        _ => "?",
    }
}

pub(crate) fn shop_row(shop: &Shop) -> String {
    let spec = shop.spec.clone().unwrap_or_default();
    let blocked = shop
        .status
        .as_ref()
        .and_then(|s| s.blocked_by.as_ref())
        .map(|b| {
            let kind = ResourceKind::try_from(b.kind).map(|k| k.as_str_name()).ok();
            format!("{} ({})", enum_name(kind, "RESOURCE_KIND_"), b.reason)
        })
        .unwrap_or_default();
    let deleting = if spec.deletion_requested_at.is_some() {
        " [deleting]"
    } else {
        ""
    };
    let paused = match shop.status.as_ref().and_then(|s| s.paused.as_ref()) {
        Some(pause) if pause.region => " [region paused]",
        Some(_) => " [paused]",
        None => "",
    };
    format!(
        "{:<40} {:<14} {:>5} {:<6} {blocked}{deleting}{paused}",
        spec.shop_domain,
        spec.region,
        spec.generation,
        ready(shop)
    )
}

pub(crate) fn shop_details(shop: &Shop) -> String {
    let spec = shop.spec.clone().unwrap_or_default();
    let mut out = format!(
        "Shop:            {}\nRegion:          {}\nSource:          s3://{}/{}.zip @ {}\n",
        spec.shop_domain, spec.region, spec.source_bucket, spec.shop_domain, spec.source_version
    );
    if let Some(custom) = &spec.custom_domain {
        out.push_str(&format!("Custom domain:   {custom}\n"));
    }
    out.push_str(&format!(
        "Generation:      {} (restart {})\nReady:           {}\n",
        spec.generation,
        spec.restart_generation,
        ready(shop)
    ));
    if spec.deletion_requested_at.is_some() {
        out.push_str("Deletion:        requested\n");
    }
    let Some(status) = &shop.status else {
        return out;
    };
    if let Some(pause) = &status.paused {
        let scope = if pause.region { "region " } else { "" };
        out.push_str(&format!("Paused:          {scope}yes: {}\n", pause.reason));
    }
    if let Some(placement) = &status.placement {
        out.push_str(&format!(
            "Placement:       {} port {} on {}\n",
            placement.instance_group, placement.port, placement.nlb_arn
        ));
    }
    if let Some(blocker) = &status.blocked_by {
        let kind = ResourceKind::try_from(blocker.kind)
            .map(|k| k.as_str_name())
            .ok();
        out.push_str(&format!(
            "Blocked by:      {}: {} {}\n",
            enum_name(kind, "RESOURCE_KIND_"),
            blocker.reason,
            blocker.message
        ));
    }
    if !status.resources.is_empty() {
        out.push_str(&format!(
            "\n{:<14} {:<12} {:<12} {:>5} REASON\n",
            "RESOURCE", "SYNC", "HEALTH", "GEN"
        ));
        for r in &status.resources {
            let kind = ResourceKind::try_from(r.kind).map(|k| k.as_str_name()).ok();
            let sync = SyncState::try_from(r.sync).map(|k| k.as_str_name()).ok();
            let health = Health::try_from(r.health).map(|k| k.as_str_name()).ok();
            out.push_str(&format!(
                "{:<14} {:<12} {:<12} {:>5} {} {}\n",
                enum_name(kind, "RESOURCE_KIND_"),
                enum_name(sync, "SYNC_STATE_"),
                enum_name(health, "HEALTH_"),
                r.observed_generation,
                r.reason,
                r.message
            ));
        }
    }
    out
}

pub(crate) fn shop_json(shop: &Shop) -> Value {
    let spec = shop.spec.clone().unwrap_or_default();
    let status = shop.status.clone().unwrap_or_default();
    json!({
        "spec": {
            "shop_domain": spec.shop_domain,
            "region": spec.region,
            "source_bucket": spec.source_bucket,
            "source_version": spec.source_version,
            "custom_domain": spec.custom_domain,
            "generation": spec.generation,
            "restart_generation": spec.restart_generation,
            "deletion_requested_at": time(spec.deletion_requested_at.as_ref()),
            "created_at": time(spec.created_at.as_ref()),
            "updated_at": time(spec.updated_at.as_ref()),
        },
        "status": {
            "ready": ready(shop),
            "conditions": status.conditions.iter().map(|c| json!({
                "type": enum_name(ConditionType::try_from(c.r#type).map(|t| t.as_str_name()).ok(), "CONDITION_TYPE_"),
                "status": enum_name(ConditionStatus::try_from(c.status).map(|t| t.as_str_name()).ok(), "CONDITION_STATUS_"),
                "reason": c.reason,
                "message": c.message,
                "observed_generation": c.observed_generation,
            })).collect::<Vec<_>>(),
            "resources": status.resources.iter().map(|r| json!({
                "kind": enum_name(ResourceKind::try_from(r.kind).map(|t| t.as_str_name()).ok(), "RESOURCE_KIND_"),
                "desired": r.desired,
                "observed": r.observed,
                "sync": enum_name(SyncState::try_from(r.sync).map(|t| t.as_str_name()).ok(), "SYNC_STATE_"),
                "health": enum_name(Health::try_from(r.health).map(|t| t.as_str_name()).ok(), "HEALTH_"),
                "reason": r.reason,
                "message": r.message,
                "observed_generation": r.observed_generation,
                "attempts": r.attempts,
                "next_attempt_at": time(r.next_attempt_at.as_ref()),
            })).collect::<Vec<_>>(),
            "blocked_by": status.blocked_by.map(|b| json!({
                "kind": enum_name(ResourceKind::try_from(b.kind).map(|t| t.as_str_name()).ok(), "RESOURCE_KIND_"),
                "reason": b.reason,
                "message": b.message,
                "next_attempt_at": time(b.next_attempt_at.as_ref()),
            })),
            "paused": status.paused.as_ref().map(pause_json),
            "placement": status.placement.map(|p| json!({
                "instance_group": p.instance_group, "nlb_arn": p.nlb_arn, "port": p.port,
            })),
        },
    })
}

fn pause_json(pause: &Pause) -> Value {
    json!({ "region": pause.region, "reason": pause.reason, "since": time(pause.since.as_ref()) })
}

fn kind_name(kind: i32) -> String {
    let name = ResourceKind::try_from(kind).map(|k| k.as_str_name()).ok();
    enum_name(name, "RESOURCE_KIND_")
}

/// One line per resource: its actions, or `nothing to do`, then what it waits for.
pub(crate) fn plan_text(plan: &PlanShopResponse) -> String {
    let mut out = format!(
        "Plan for {} (generation {})\n",
        plan.shop_domain, plan.generation
    );
    if let Some(pause) = &plan.paused {
        let scope = if pause.region { "its region is " } else { "" };
        out.push_str(&format!(
            "paused: {scope}paused ({}); nothing below happens until a resume\n",
            pause.reason
        ));
    }
    for step in &plan.steps {
        let kind = kind_name(step.kind);
        let waits: Vec<String> = step.waiting_for.iter().map(|k| kind_name(*k)).collect();
        let waits = if waits.is_empty() {
            String::new()
        } else {
            format!(" (after {})", waits.join(", "))
        };
        if step.actions.is_empty() && step.note.is_empty() {
            out.push_str(&format!("{kind:<14} nothing to do{waits}\n"));
        }
        for action in &step.actions {
            out.push_str(&format!("{kind:<14} {action}{waits}\n"));
        }
        if !step.note.is_empty() {
            out.push_str(&format!("{kind:<14} stopped: {}\n", step.note));
        }
    }
    out
}

pub(crate) fn plan_json(plan: &PlanShopResponse) -> Value {
    json!({
        "shop_domain": plan.shop_domain,
        "generation": plan.generation,
        "paused": plan.paused.as_ref().map(pause_json),
        "steps": plan.steps.iter().map(|step| json!({
            "kind": kind_name(step.kind),
            "actions": step.actions,
            "waiting_for": step.waiting_for.iter().map(|k| kind_name(*k)).collect::<Vec<_>>(),
            "note": step.note,
        })).collect::<Vec<_>>(),
    })
}

pub(crate) fn domain_check_text(check: &CheckDomainResponse) -> String {
    let mut out = format!("Domain {} (region {})\n", check.domain, check.region);
    for finding in &check.findings {
        out.push_str(&format!(
            "{:<8} {:<20} {}\n",
            severity_name(finding.severity),
            finding.code,
            finding.message
        ));
        if !finding.fix.is_empty() {
            out.push_str(&format!("{:<29} fix: {}\n", "", finding.fix));
        }
    }
    out
}

pub(crate) fn domain_check_json(check: &CheckDomainResponse) -> Value {
    json!({
        "domain": check.domain,
        "region": check.region,
        "blocked": check.blocked,
        "findings": check.findings.iter().map(|finding| json!({
            "severity": severity_name(finding.severity),
            "code": finding.code,
            "message": finding.message,
            "fix": finding.fix,
        })).collect::<Vec<_>>(),
    })
}

fn severity_name(severity: i32) -> String {
    let name = FindingSeverity::try_from(severity)
        .map(|s| s.as_str_name())
        .ok();
    enum_name(name, "FINDING_SEVERITY_")
}

pub(crate) fn region_json(config: &RegionConfig) -> Value {
    serde_json::to_value(RegionFile::from(config.clone())).unwrap_or_default()
}

pub(crate) fn group_json(group: &InstanceGroup) -> Value {
    serde_json::to_value(GroupFile::from(group.clone())).unwrap_or_default()
}
