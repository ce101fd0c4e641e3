"""Checks of the Helm chart, the IAM policy and the container image files.

Run by scripts/check-chart (which prepares .build/venv); exits non-zero on any failure. What
it checks, in order:

- the chart's plain YAML files parse, and Chart.yaml agrees with Cargo.toml;
- values.schema.json is a valid draft-07 schema; values.yaml and the ci/ values pass it,
  ci/bad-values.yaml and a few invalid combinations are refused where they should be, and
  several replicas running the reconcile loops on PostgreSQL are accepted;
- iam-policy.json is a well-formed, least-privilege policy granting exactly the actions
  docs/aws-calls.md lists;
- Helm itself (the Helm v4 engine from helm-python-sdk): `lint --strict` and rendering with
  the default and the ci/ values, and refusal of values the templates reject with `fail`;
- the rendered manifests: parse, name themselves, validate against Kubernetes' schemas
  (kubernetes-validate, strict), wire probes and Services to the ports the controller
  listens on, keep secrets out of the ConfigMap, and set only variables src/config.rs reads;
  SQLite runs one pod replaced with Recreate, PostgreSQL rolls one pod at a time, the lease
  TTL reaches the controller, and the PodDisruptionBudget never lets every replica go; one
  of the ci/ values runs the reconcile loops on several replicas;
- the Dockerfile and .dockerignore agree with Cargo.toml and the chart.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import re
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path

import helm_python as helm
import jsonschema
import yaml
from kubernetes_validate import utils as kubernetes_validate

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "shop-controller"
RELEASE = "shop-controller"
NAMESPACE = "shops"

# Variables the chart sets for flags still being built; today's binary ignores them. When a
# flag lands under this name, the check says so: drop it here and check the chart's use.
PENDING_VARIABLES: dict[str, str] = {}
# Variables the controller reads that src/config.rs does not declare.
OTHER_VARIABLES = {"RUST_LOG", "AWS_REGION"}

# Kinds no bundled Kubernetes schema describes (custom resources).
CUSTOM_API_GROUPS = ("monitoring.coreos.com/",)

# A managed policy holds at most 6,144 characters, whitespace not counted.
MANAGED_POLICY_LIMIT = 6144
OWNERSHIP_TAG = "shop-controller/installation"

failures: list[str] = []


def check(condition: bool, message: str) -> bool:
    if not condition:
        failures.append(message)
        print(f"FAIL {message}")
    return condition


def section(title: str) -> None:
    print(f"-- {title}")


# --- Plain files -------------------------------------------------------------------------


def load_yaml(path: Path):
    with path.open() as file:
        return yaml.safe_load(file)


def check_plain_files() -> dict:
    section("chart files parse; Chart.yaml agrees with Cargo.toml")
    for path in [CHART / "Chart.yaml", CHART / "values.yaml", *sorted(CHART.glob("ci/*.yaml"))]:
        try:
            load_yaml(path)
        except yaml.YAMLError as error:
            check(False, f"{path.relative_to(ROOT)} is not YAML: {error}")
    chart = load_yaml(CHART / "Chart.yaml")
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    check(chart.get("apiVersion") == "v2", "Chart.yaml: apiVersion must be v2")
    check(chart.get("name") == CHART.name, "Chart.yaml: name must match the chart's folder")
    check(
        re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", str(chart.get("version"))) is not None,
        "Chart.yaml: version must be SemVer",
    )
    check(
        chart.get("appVersion") == cargo["package"]["version"],
        f"Chart.yaml: appVersion {chart.get('appVersion')} differs from Cargo.toml's "
        f"{cargo['package']['version']}",
    )
    return chart


# --- Values schema -----------------------------------------------------------------------


def merged(defaults: dict, overrides: dict | None) -> dict:
    """Values as Helm coalesces them: maps merge, everything else replaces, null deletes."""
    result = copy.deepcopy(defaults)
    for key, value in (overrides or {}).items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def leaf_paths(tree: dict, prefix: tuple = ()) -> list[tuple]:
    paths = []
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            paths.extend(leaf_paths(value, prefix + (key,)))
        else:
            paths.append(prefix + (key,))
    return paths


def schema_errors(validator, values: dict) -> list:
    return list(validator.iter_errors(values))


def covered(path: tuple, errors: list) -> bool:
    """Whether some error is about `path`: at it, or an unknown key named by its parent."""
    for error in errors:
        at = tuple(error.absolute_path)
        if at == path:
            return True
        if (
            error.validator == "additionalProperties"
            and at == path[:-1]
            and repr(path[-1]) in error.message
        ):
            return True
    return False


def check_schema(defaults: dict) -> jsonschema.Draft7Validator:
    section("values.schema.json: draft-07, strict, accepts the chart's values, refuses bad ones")
    schema = json.loads((CHART / "values.schema.json").read_text())
    check(
        schema.get("$schema") == "http://json-schema.org/draft-07/schema#",
        "values.schema.json must declare draft-07",
    )
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)

    for path in [CHART / "values.yaml", *sorted(CHART.glob("ci/*-values.yaml"))]:
        if path.name.startswith("bad-"):
            continue
        errors = schema_errors(validator, merged(defaults, load_yaml(path)))
        check(
            not errors,
            f"{path.relative_to(ROOT)} fails the schema: "
            + "; ".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors),
        )

    bad = load_yaml(CHART / "ci" / "bad-values.yaml")
    errors = schema_errors(validator, merged(defaults, bad))
    check(bool(errors), "ci/bad-values.yaml passes the schema; it must be refused")
    for path in leaf_paths(bad):
        check(covered(path, errors), f"ci/bad-values.yaml: nothing refuses {'.'.join(path)}")

    refused = {
        "SQLite with two replicas": {"replicaCount": 2, "reconcile": {"enabled": False}},
        "SQLite with two replicas running the reconcile loops": {"replicaCount": 2},
        "SQLite from an existing Secret with two replicas": {
            "replicaCount": 2,
            "database": {"url": "", "existingSecret": "db", "engine": "sqlite"},
        },
        "an existing database Secret without its engine": {
            "database": {"url": "", "existingSecret": "db"}
        },
        "no database at all": {"database": {"url": ""}},
        "a string port": {"grpc": {"port": "50051"}},
        "a lease TTL in words": {"reconcile": {"leaseTtl": "1 minute"}},
        "a zero lease TTL": {"reconcile": {"leaseTtl": "0"}},
    }
    for name, overrides in refused.items():
        check(
            bool(schema_errors(validator, merged(defaults, overrides))),
            f"values.schema.json accepts {name}",
        )
    # Leases let several replicas run the reconcile loops over one PostgreSQL database.
    accepted = {
        "the reconcile loops on three PostgreSQL replicas": {
            "replicaCount": 3,
            "database": {"url": "postgres://db/shops"},
        },
        "the reconcile loops on two replicas, PostgreSQL from an existing Secret": {
            "replicaCount": 2,
            "database": {"url": "", "existingSecret": "db", "engine": "postgres"},
        },
        "a lease TTL of 500ms": {"reconcile": {"leaseTtl": "500ms"}},
    }
    for name, overrides in accepted.items():
        errors = schema_errors(validator, merged(defaults, overrides))
        check(
            not errors,
            f"values.schema.json refuses {name}: " + "; ".join(e.message for e in errors),
        )
    return validator


# --- IAM policy --------------------------------------------------------------------------


def documented_actions() -> set[str]:
    """IAM actions of the call table in docs/aws-calls.md (its third column)."""
    actions = set()
    for line in (ROOT / "docs" / "aws-calls.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        actions.update(re.findall(r"`([a-z0-9-]+:[A-Za-z0-9]+)`", cells[2]))
    return actions


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def condition_keys(statement: dict) -> set[str]:
    return {key for block in statement.get("Condition", {}).values() for key in block}


def check_iam_policy() -> None:
    section("iam-policy.json: well formed, least privilege, exactly docs/aws-calls.md's actions")
    text = (CHART / "iam-policy.json").read_text()
    policy = json.loads(text)
    statements = policy.get("Statement", [])
    check(policy.get("Version") == "2012-10-17", "iam-policy.json: Version must be 2012-10-17")
    check(set(policy) == {"Version", "Statement"}, "iam-policy.json: only Version and Statement")
    check(
        len(re.sub(r"\s", "", text)) <= MANAGED_POLICY_LIMIT,
        f"iam-policy.json is over the {MANAGED_POLICY_LIMIT}-character managed policy limit",
    )

    sids = [statement.get("Sid", "") for statement in statements]
    check(len(set(sids)) == len(sids), "iam-policy.json: Sids must be unique")
    operators = {"StringEquals", "StringEqualsIfExists", "StringLike", "ArnLike", "Null"}
    granted: dict[str, list[dict]] = {}
    for statement in statements:
        sid = statement.get("Sid", "")
        check(re.fullmatch(r"[A-Za-z0-9]+", sid) is not None, f"iam-policy.json: Sid {sid!r}")
        check(statement.get("Effect") == "Allow", f"iam-policy.json {sid}: only Allow statements")
        check(
            set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"},
            f"iam-policy.json {sid}: unexpected elements",
        )
        for resource in as_list(statement.get("Resource")):
            check(
                resource == "*" or resource.startswith("arn:aws:"),
                f"iam-policy.json {sid}: resource {resource!r}",
            )
        check(
            set(statement.get("Condition", {})) <= operators,
            f"iam-policy.json {sid}: condition operators outside {sorted(operators)}",
        )
        for action in as_list(statement.get("Action")):
            check(
                re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9]+", action) is not None,
                f"iam-policy.json {sid}: action {action!r} (no wildcards)",
            )
            granted.setdefault(action, []).append(statement)

    documented = documented_actions()
    check(len(documented) > 20, "docs/aws-calls.md: the call table was not found")
    for action in sorted(documented - set(granted)):
        check(False, f"{action} is in docs/aws-calls.md but not in iam-policy.json")
    for action in sorted(set(granted) - documented):
        check(False, f"{action} is in iam-policy.json but not in docs/aws-calls.md")

    # Mutations of ELBv2 and ACM objects only on objects tagged as this installation's.
    reads = ("Describe", "List", "Get")
    for action, grants in granted.items():
        service, name = action.split(":")
        if service not in {"elasticloadbalancing", "acm"} or name.startswith(reads):
            continue
        for statement in grants:
            check(
                any(key.endswith(f"Tag/{OWNERSHIP_TAG}") for key in condition_keys(statement)),
                f"iam-policy.json {statement['Sid']}: {action} without an ownership tag condition",
            )
        if name.startswith("Create"):
            check(
                all(f"aws:RequestTag/{OWNERSHIP_TAG}" in condition_keys(s) for s in grants),
                f"iam-policy.json: {action} must require the ownership tag on the request",
            )
            check(
                any(
                    name
                    in as_list(
                        s.get("Condition", {})
                        .get("StringEquals", {})
                        .get("elasticloadbalancing:CreateAction", [])
                    )
                    for s in granted.get("elasticloadbalancing:AddTags", [])
                ),
                f"iam-policy.json: no AddTags statement for {name}'s tags on create",
            )
    check(
        all(
            condition_keys(s) & {f"ssm:resourceTag/{OWNERSHIP_TAG}"}
            or all(r.startswith("arn:aws:ssm:") for r in as_list(s["Resource"]))
            for s in granted.get("ssm:SendCommand", [])
        ),
        "iam-policy.json: ssm:SendCommand on instances must require the ownership tag",
    )


# --- Helm --------------------------------------------------------------------------------


def lint(values: dict | None, kube_version: str) -> list[str]:
    report = helm.lint(str(CHART), values, strict=True, kube_version=kube_version)
    # Severity 1 is information ("icon is recommended"); strict lint fails on the rest. Helm
    # reports most problems both as a message and as an error: keep each once.
    problems = [m["error"] for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    return list(dict.fromkeys(problem.strip() for problem in problems))


def render(values: dict | None) -> list[dict]:
    with helm.Chart.load(str(CHART)) as chart:
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = []
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            continue
        for document in yaml.safe_load_all(text):
            if document is not None:
                document["__template"] = template
                objects.append(document)
    return objects


def check_helm(minimum_kube: str, cases: dict) -> dict:
    section(
        f"helm lint --strict and template (Helm {helm.helm_sdk_version()}, kube {minimum_kube})"
    )
    rendered = {}
    for name, values in cases.items():
        problems = lint(values, minimum_kube)
        check(not problems, f"helm lint --strict with {name}: " + " | ".join(problems))
        try:
            rendered[name] = render(values)
        except helm.HelmError as error:
            check(False, f"helm template with {name}: {error}")
    return rendered


def render_without_schema(values: dict) -> str:
    """Renders a copy of the chart without values.schema.json and returns Helm's error, so
    the templates' own `fail` messages are checked (Helm's lint only logs them)."""
    with tempfile.TemporaryDirectory() as scratch:
        copy_ = Path(scratch) / CHART.name
        shutil.copytree(CHART, copy_)
        (copy_ / "values.schema.json").unlink()
        try:
            with helm.Chart.load(str(copy_)) as chart:
                chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        except helm.HelmError as error:
            return str(error)
    return ""


def check_helm_refusals(minimum_kube: str) -> None:
    section("the templates refuse what the controller cannot run; Helm refuses bad values")
    postgres = {"url": "postgres://db/shops"}
    refusals = [
        ("SQLite", {"replicaCount": 2, "reconcile": {"enabled": False}}),
        ("SQLite", {"replicaCount": 2}),
        ("SQLite", {"replicaCount": 2, "database": {"existingSecret": "db", "engine": "sqlite"}}),
        ("terminationGracePeriodSeconds", {"terminationGracePeriodSeconds": 30}),
        ("below 1024", {"nginx": {"privilegedPort": "none"}}),
        ("database.engine", {"database": {"url": "", "existingSecret": "db"}}),
        ("not under database.sqlite.mountPath", {"database": {"url": "sqlite:/data/shops.db"}}),
        (
            "podDisruptionBudget",
            {"replicaCount": 2, "database": postgres, "podDisruptionBudget": {"maxUnavailable": 2}},
        ),
        (
            "podDisruptionBudget",
            {
                "replicaCount": 3,
                "database": postgres,
                "podDisruptionBudget": {"maxUnavailable": "67%"},
            },
        ),
    ]
    for expected, overrides in refusals:
        error = render_without_schema(overrides)
        check(
            expected in error,
            f"templates accept {overrides} (expected a failure naming {expected!r}): {error!r}",
        )
    # The reconcile loops take leases: several replicas over PostgreSQL must render.
    for overrides in (
        {"replicaCount": 2, "database": postgres},
        {"replicaCount": 3, "database": postgres, "podDisruptionBudget": {"maxUnavailable": "50%"}},
    ):
        error = render_without_schema(overrides)
        check(not error, f"templates refuse {overrides}: {error!r}")
    bad = load_yaml(CHART / "ci" / "bad-values.yaml")
    try:
        render(bad)
        check(False, "helm template accepts ci/bad-values.yaml")
    except helm.HelmValuesError:
        pass
    check(bool(lint(bad, minimum_kube)), "helm lint accepts ci/bad-values.yaml")


# --- Rendered manifests ------------------------------------------------------------------


def one(objects: list[dict], kind: str, name: str | None = None) -> dict | None:
    found = [
        o
        for o in objects
        if o.get("kind") == kind and (name is None or o.get("metadata", {}).get("name") == name)
    ]
    check(len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}")
    return found[0] if found else None


def listen_port(value: str) -> int:
    return int(value.rsplit(":", 1)[1])


def declared_variables() -> set[str]:
    config = (ROOT / "src" / "config.rs").read_text()
    return set(re.findall(r'env = "([A-Z0-9_]+)"', config))


def check_manifests(name: str, objects: list[dict], values: dict, kube_versions: list[str]) -> None:
    kinds = ", ".join(sorted(o["kind"] for o in objects))
    section(f"rendered manifests with {name}: {kinds}; Kubernetes {' and '.join(kube_versions)}")
    for obj in objects:
        where = f"{name}: {obj['__template']}"
        check(bool(obj.get("apiVersion")), f"{where}: an object without apiVersion")
        check(bool(obj.get("kind")), f"{where}: an object without kind")
        check(bool(obj.get("metadata", {}).get("name")), f"{where}: an object without a name")
        body = {k: v for k, v in obj.items() if k != "__template"}
        if obj.get("apiVersion", "").startswith(CUSTOM_API_GROUPS):
            continue
        for version in kube_versions:
            try:
                kubernetes_validate.validate(body, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                check(
                    False,
                    f"{where}: {obj['kind']} invalid for Kubernetes {version}: {error.message}",
                )
            except kubernetes_validate.SchemaNotFoundError:
                check(False, f"{where}: no Kubernetes {version} schema for {obj['kind']}")

    deployment = one(objects, "Deployment")
    config_map = one(objects, "ConfigMap", RELEASE)
    if deployment is None or config_map is None:
        return
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    config = config_map["data"]

    check_ports(name, objects, values, container, ports, config)
    check_security(name, deployment, pod, container, config)
    check_replicas(name, objects, values, deployment, container, config)
    check_secrets_stay_secret(name, objects, config_map, container)
    check_variables(name, config, container)

    account = one(objects, "ServiceAccount")
    role = values.get("iam", {}).get("roleArn")
    if account is not None and role:
        check(
            account["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn") == role,
            f"{name}: the ServiceAccount lacks the IRSA annotation for {role}",
        )
    if values.get("iam", {}).get("exportPolicy"):
        exported = one(objects, "ConfigMap", f"{RELEASE}-iam-policy")
        check(
            exported is not None
            and json.loads(exported["data"]["iam-policy.json"])
            == json.loads((CHART / "iam-policy.json").read_text()),
            f"{name}: the exported IAM policy differs from iam-policy.json",
        )


def check_ports(name, objects, values, container, ports, config) -> None:
    grpc = ports.get("grpc")
    check(grpc == values["grpc"]["port"], f"{name}: container port grpc is {grpc}")
    check(
        listen_port(config["SHOP_CONTROLLER_LISTEN"]) == grpc,
        f"{name}: --listen is not the grpc port",
    )
    for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container.get(probe_name, {})
        if values["tls"]["existingSecret"]:
            check(
                probe.get("tcpSocket", {}).get("port") == grpc,
                f"{name}: {probe_name} is not TCP on grpc",
            )
        else:
            check(
                probe.get("grpc", {}).get("port") == grpc,
                f"{name}: {probe_name} is not gRPC on grpc",
            )
    check(
        container["readinessProbe"].get("grpc", {}).get("service", "shop.v1.ShopService")
        == "shop.v1.ShopService",
        f"{name}: readiness must ask for shop.v1.ShopService",
    )

    for service in (o for o in objects if o["kind"] == "Service"):
        for port in service["spec"]["ports"]:
            check(
                port["targetPort"] in ports,
                f"{name}: Service {service['metadata']['name']} targets {port['targetPort']}, "
                "which the container does not declare",
            )
    for feature, variable in (
        ("metrics", "SHOP_CONTROLLER_METRICS_LISTEN"),
        ("acme", "SHOP_CONTROLLER_ACME_LISTEN"),
    ):
        enabled = values[feature]["enabled"]
        check(
            (feature in ports) == enabled, f"{name}: container port {feature} present iff enabled"
        )
        services = [
            o
            for o in objects
            if o["kind"] == "Service" and o["metadata"]["name"] == f"{RELEASE}-{feature}"
        ]
        check(
            len(services) == int(enabled),
            f"{name}: Service {RELEASE}-{feature} present iff enabled",
        )
        if enabled:
            check(
                ports[feature] == values[feature]["port"],
                f"{name}: {feature} port is not {values[feature]['port']}",
            )
            check(
                listen_port(config.get(variable, ":0")) == ports[feature],
                f"{name}: {variable} is not the {feature} port",
            )
    for monitor in (o for o in objects if o["kind"] == "ServiceMonitor"):
        check(
            [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"],
            f"{name}: the ServiceMonitor must scrape the metrics port",
        )


def check_security(name, deployment, pod, container, config) -> None:
    security = container["securityContext"]
    check(pod["securityContext"].get("runAsNonRoot") is True, f"{name}: pod must run as non-root")
    check(
        security.get("readOnlyRootFilesystem") is True,
        f"{name}: root file system must be read-only",
    )
    check(
        security.get("allowPrivilegeEscalation") is False,
        f"{name}: privilege escalation must be off",
    )
    check(
        security.get("capabilities", {}).get("drop") == ["ALL"],
        f"{name}: capabilities must drop ALL",
    )
    check(
        set(security.get("capabilities", {}).get("add", [])) <= {"NET_BIND_SERVICE"},
        f"{name}: only NET_BIND_SERVICE may be added",
    )
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    check("/tmp" in mounts, f"{name}: nginx -t needs a writable /tmp")

    grace = int(config["SHOP_CONTROLLER_SHUTDOWN_GRACE"].rstrip("s"))
    loops = 30 if config.get("SHOP_CONTROLLER_RECONCILE") == "true" else 0
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    # The loops hand their leases back after their 30 s: that needs the margin kept above.
    check(
        pod["terminationGracePeriodSeconds"] > pre_stop + max(grace, loops),
        f"{name}: terminationGracePeriodSeconds does not cover preStop and the shutdown grace",
    )


def database_engine(values: dict) -> str:
    database = values["database"]
    if database["existingSecret"]:
        return database["engine"]
    return "sqlite" if database["url"].startswith("sqlite:") else "postgres"


def check_replicas(name, objects, values, deployment, container, config) -> None:
    """SQLite: one pod, replaced. PostgreSQL: pods roll, the loops share shops by lease."""
    replicas = deployment["spec"]["replicas"]
    strategy = deployment["spec"]["strategy"]
    check(replicas == values["replicaCount"], f"{name}: {replicas} replicas rendered")
    has_data = any(m["name"] == "data" for m in container["volumeMounts"])
    if database_engine(values) == "sqlite":
        check(has_data, f"{name}: SQLite without its data volume")
        check(replicas == 1, f"{name}: SQLite must have one replica")
        check(strategy["type"] == "Recreate", f"{name}: SQLite must Recreate")
    else:
        check(not has_data, f"{name}: PostgreSQL with a SQLite data volume")
        rolling = strategy.get("rollingUpdate", {})
        check(
            strategy["type"] == "RollingUpdate"
            and rolling.get("maxUnavailable") == 0
            and rolling.get("maxSurge", 0) >= 1,
            f"{name}: PostgreSQL must roll one new pod in before an old one goes: {strategy}",
        )
    check(
        config.get("SHOP_CONTROLLER_LEASE_TTL") == values["reconcile"]["leaseTtl"],
        f"{name}: SHOP_CONTROLLER_LEASE_TTL is not reconcile.leaseTtl",
    )

    budgets = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    check(
        len(budgets) == int(values["podDisruptionBudget"]["enabled"]),
        f"{name}: PodDisruptionBudget present iff enabled",
    )
    for budget in budgets:
        evictable = budget["spec"].get("maxUnavailable", 0)
        if isinstance(evictable, str):
            evictable = -(-int(evictable.rstrip("%")) * replicas // 100)
        check(
            replicas == 1 or evictable < replicas,
            f"{name}: the PodDisruptionBudget lets a drain evict all {replicas} replicas",
        )


def check_secrets_stay_secret(name, objects, config_map, container) -> None:
    secret_values = [
        base64.b64decode(value).decode()
        for secret in objects
        if secret["kind"] == "Secret"
        for value in secret.get("data", {}).values()
    ]
    public = "\n".join(
        [
            *map(str, config_map["data"].values()),
            *(str(e.get("value", "")) for e in container.get("env", [])),
        ]
    )
    for value in secret_values:
        for line in (line.strip() for line in value.splitlines()):
            if len(line) >= 8 and not line.startswith(("#", "-----")):
                check(line not in public, f"{name}: a Secret value appears in the ConfigMap or env")
    everything_else = yaml.safe_dump(
        [
            {k: v for k, v in o.items() if k != "__template"}
            for o in objects
            if o["kind"] != "Secret"
        ]
    )
    for sentinel in (
        "check-chart-db-password",
        "check-chart-write-token",
        "Y2hlY2stY2hhcnQtYWNtZS1lbmNyeXB0aW9uLWtleTA=",
    ):
        check(sentinel not in everything_else, f"{name}: {sentinel} leaks outside the Secret")


def check_variables(name, config, container) -> None:
    declared = declared_variables()
    check(len(declared) > 10, 'src/config.rs: no env = "..." declarations found')
    used = set(config) | {e["name"] for e in container.get("env", [])}
    for variable in sorted(used - declared - set(PENDING_VARIABLES) - OTHER_VARIABLES):
        check(False, f"{name}: the chart sets {variable}, which src/config.rs does not read")
    for variable, issue in sorted(PENDING_VARIABLES.items()):
        check(
            variable not in declared,
            f"src/config.rs now reads {variable}: drop it from PENDING_VARIABLES and the "
            f"TODO({issue}) notes, and check the chart's use of it",
        )


def shares_the_loops(objects: list[dict]) -> bool:
    """Whether these manifests run the reconcile loops on several pods that roll."""
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    configs = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == RELEASE]
    return (
        len(deployments) == 1
        and len(configs) == 1
        and deployments[0]["spec"]["replicas"] > 1
        and deployments[0]["spec"]["strategy"]["type"] == "RollingUpdate"
        and configs[0]["data"].get("SHOP_CONTROLLER_RECONCILE") == "true"
    )


# --- Container image files ---------------------------------------------------------------


def check_image_files(run_as_user: int | None) -> None:
    section("Dockerfile and .dockerignore agree with Cargo.toml and the chart (not built here)")
    dockerfile = (ROOT / "Dockerfile").read_text()
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    rust = cargo["workspace"]["package"]["rust-version"]
    check(
        f"FROM rust:{rust}-bookworm AS build" in dockerfile,
        f"Dockerfile must build on rust:{rust}-bookworm",
    )
    check("FROM debian:bookworm-slim" in dockerfile, "Dockerfile must run on debian:bookworm-slim")
    check(
        re.search(r"cargo build --release --locked --bin shop-controller --bin shopctl", dockerfile)
        is not None,
        "Dockerfile must build both binaries with --locked",
    )
    check(
        "type=cache,target=/usr/local/cargo/registry" in dockerfile,
        "Dockerfile must cache the registry",
    )
    check(
        re.search(r"\bnginx-light\b", dockerfile) is not None,
        "the runtime image needs nginx-light (nginx -t)",
    )
    check(
        re.search(r"\bca-certificates\b", dockerfile) is not None,
        "the runtime image needs ca-certificates",
    )
    users = re.findall(r"^USER\s+(\d+)", dockerfile, flags=re.MULTILINE)
    check(
        users == [str(run_as_user)],
        f"Dockerfile USER {users} must be the chart's runAsUser {run_as_user}",
    )
    for binary in ("shop-controller", "shopctl"):
        check(
            binary == "shop-controller" or (ROOT / "src" / "bin" / binary).is_dir(),
            f"Dockerfile builds {binary}, which the crate does not have",
        )
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in ("target", ".build", ".git"):
        check(
            any(line.strip("/") == entry for line in ignored),
            f".dockerignore must leave out {entry}",
        )


# --- Main ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--values",
        action="append",
        default=[],
        type=Path,
        help="a values file of your own to check like the ci/ ones (repeatable)",
    )
    extra = parser.parse_args().values

    chart = check_plain_files()
    defaults = load_yaml(CHART / "values.yaml")
    validator = check_schema(defaults)
    for path in extra:
        errors = schema_errors(validator, merged(defaults, load_yaml(path)))
        check(
            not errors,
            f"{path} fails the schema: "
            + "; ".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors),
        )
    check_iam_policy()

    minimum = re.search(r"(\d+\.\d+)\.\d+", chart["kubeVersion"]).group(0)
    kube_versions = [minimum, kubernetes_validate.latest_version()]
    cases = {"default values": None}
    for path in sorted(CHART.glob("ci/*-values.yaml")):
        if not path.name.startswith("bad-"):
            cases[f"ci/{path.name}"] = load_yaml(path)
    for path in extra:
        cases[str(path)] = load_yaml(path)
    rendered = check_helm(f"v{minimum}", cases)
    check_helm_refusals(f"v{minimum}")

    check(
        any(shares_the_loops(objects) for objects in rendered.values()),
        "no ci/ values render the reconcile loops on several replicas rolled one at a time",
    )

    run_as_user = None
    for name, objects in rendered.items():
        check_manifests(name, objects, merged(defaults, cases[name]), kube_versions)
        for obj in objects:
            if obj["kind"] == "Deployment":
                run_as_user = obj["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    check_image_files(run_as_user)

    if failures:
        print(f"check-chart: {len(failures)} problem(s)", file=sys.stderr)
        return 1
    print(
        "check-chart: chart, values schema, IAM policy and image files are consistent "
        f"({len(cases)} value sets rendered)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
