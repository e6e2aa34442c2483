"""The Helm chart (helm/plankline), rendered by Helm's own engine for several value sets.

Rendering and linting go through ``helm-python-sdk`` (Helm's Go SDK bound with ctypes: no
helm binary, no cluster). Every manifest is validated against the Kubernetes OpenAPI schemas
of the oldest and newest versions the chart supports (``kubernetes-validate``, strict), scanned
by ``checkov`` (its Helm mode needs a helm binary and scans nothing without one, so the rendered
manifests are written to a folder and scanned as Kubernetes), and read back into the services'
own settings classes: every ``PLANKLINE_*`` variable a service reads is set, and parses.

checkov pins networkx<2.7, which scikit-image (networkx>=3) refuses, so it cannot live in the
project's venv: the ``checkov`` fixture takes it from ``tool_venvs`` ($PLANKLINE_CHECKOV, one on
PATH, or a tool venv made once, in the background from collection on).
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import tool_venvs
import yaml

helm = pytest.importorskip(
    "helm_python", reason="helm-python-sdk not installed (pip install helm-python-sdk==0.2.2)"
)
kv = pytest.importorskip(
    "kubernetes_validate",
    reason="kubernetes-validate not installed (pip install kubernetes-validate==1.37.0)",
)

from plankline.stream import auth, contracts, launch  # noqa: E402
from plankline.stream.settings import GatewaySettings, ServiceSettings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "plankline"
EXAMPLES = ROOT / "helm" / "examples"
RELEASE = "ocean"  # not the chart's name, so resource names are <release>-plankline-<component>
NAMESPACE = "plankton"
FULLNAME = f"{RELEASE}-plankline"
DIGEST = "sha256:" + "ab" * 32

#: Kinds whose schemas are CRDs (KEDA, Prometheus Operator): not in kubernetes-validate,
#: checked against the objects they point at in test_crd_objects_point_at_what_the_chart_renders.
CRD_KINDS = {"ScaledObject", "ServiceMonitor"}

#: GatewaySettings fields the chart does not set, and why.
GATEWAY_NOT_SET = {
    "gateway_tokens": "the same JSON is mounted from a Secret as PLANKLINE_GATEWAY_TOKENS_FILE, "
    "which the gateway re-reads on change (revocation without a restart)",
}

POD_TLS = {
    "gateway": {
        "tls": {"enabled": True, "existingSecret": "ocean-gateway-pod-tls", "clientCA": False}
    }
}
POD_MTLS = {
    "gateway": {
        "tls": {"enabled": True, "existingSecret": "ocean-gateway-pod-tls", "clientCA": True}
    }
}
PINNED = {
    "services": {
        name: {"image": {"digest": DIGEST}}
        for name in ("segmenter", "measurer", "classifier", "collector")
    },
    "gateway": {"image": {"digest": DIGEST}},
    "triton": {"enabled": False},
}

#: name -> (example files, extra values); each renders a different face of the chart.
VALUE_SETS: dict[str, tuple[list[str], dict[str, Any]]] = {
    "defaults": ([], {}),
    "external": (["external.yaml"], {}),
    "autoscaling": (["autoscaling.yaml"], {}),
    "gpu-triton": (["gpu-triton.yaml"], {}),
    "classifier-cuda": (["classifier-cuda.yaml"], {}),
    "ingress-tls": (["ingress-tls.yaml"], {}),
    "pod-tls": (["ingress-tls.yaml"], POD_TLS),
    "pod-mtls": (["ingress-tls.yaml"], POD_MTLS),
    "pinned-cpu": (["external.yaml"], PINNED),
}


# ---------------------------------------------------------------------------- helpers


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``, nested maps merged (what several ``-f`` files do)."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def user_values(name: str) -> dict[str, Any]:
    files, extra = VALUE_SETS[name]
    values: dict[str, Any] = {}
    for file in files:  # Helm's own parser, as `helm install -f` reads them
        values = deep_merge(values, helm.values_from_yaml((EXAMPLES / file).read_text()))
    return deep_merge(values, extra)


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        files = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    docs = []
    for path, text in sorted(files.items()):
        if path.endswith(".yaml"):
            docs += [doc for doc in yaml.safe_load_all(text) if doc]
    return docs


def chart_values(values: dict[str, Any]) -> dict[str, Any]:
    with helm.Chart.load(CHART) as chart:
        return chart.merge_values(values)


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def component(name: str) -> str:
    return f"{FULLNAME}-{name}"


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def resolved_env(deployment: dict[str, Any], docs: list[dict[str, Any]]) -> dict[str, str]:
    """The container's environment as the kubelet would set it: secretKeyRefs read from the
    rendered Secret (the key must exist there); a Secret the chart does not render
    (existingSecret) stands for one the operator created."""
    secrets = of_kind(docs, "Secret")
    env = {}
    for var in container(deployment).get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        if ref["name"] in secrets:
            data = secrets[ref["name"]]["data"]
            assert ref["key"] in data, f"{var['name']}: Secret {ref['name']} has no {ref['key']}"
            env[var["name"]] = base64.b64decode(data[ref["key"]]).decode()
        else:
            env[var["name"]] = f"<{ref['name']}/{ref['key']}>"
    return env


def env_name(model: type, field: str) -> str:
    return f"{model.model_config['env_prefix']}{field}".upper()


def settings_from(model: type, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """Build the service's settings object from exactly this environment."""
    with monkeypatch.context() as patch:
        for key in list(os.environ):
            if key.upper().startswith("PLANKLINE_"):
                patch.delenv(key)
        for key, value in env.items():
            patch.setenv(key, value)
        return model()


def mounted_file(deployment: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    """(volume, key) that serves ``path`` in the container, or an assertion error."""
    spec = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    for mount in container(deployment)["volumeMounts"]:
        prefix = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix):
            return volumes[mount["name"]], path.removeprefix(prefix)
    raise AssertionError(f"{path} is in no volume of {deployment['metadata']['name']}")


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(user_values(name)) for name in VALUE_SETS}


@pytest.fixture(scope="session")
def unique_docs(rendered) -> list[tuple[str, dict[str, Any]]]:
    """(first value set, manifest) for each distinct manifest: value sets share most of them."""
    seen: set[str] = set()
    out = []
    for name, docs in rendered.items():
        for doc in docs:
            key = json.dumps(doc, sort_keys=True)
            if key not in seen:
                seen.add(key)
                out.append((name, doc))
    return out


def supported_versions() -> list[str]:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return chart["annotations"]["plankline.io/kube-versions-tested"].split()


# ---------------------------------------------------------------------------- lint and schemas


@pytest.mark.parametrize("kube", supported_versions())
def test_chart_lints_strictly_for_every_value_set_but_for_unfetched_dependencies(kube: str):
    """Helm's linter in strict mode (warnings are errors) finds nothing but the bundled Kafka
    and MinIO charts missing from charts/: `helm dependency build` fetches them at install
    time, from repositories this machine cannot reach."""
    missing = [d["name"] for d in helm.dependency_list(CHART) if d["status"] == "missing"]
    assert set(missing) <= {"kafka", "minio"}
    allowed = {f"chart directory is missing these dependencies: {','.join(missing)}"}
    for name in VALUE_SETS:
        report = helm.lint(
            CHART, user_values(name), strict=True, namespace=NAMESPACE, kube_version=f"v{kube}.0"
        )
        assert set(report["errors"]) <= allowed, (name, report["messages"])
        assert report["total_charts_linted"] == 1


def test_oldest_supported_kubernetes_is_the_charts_kube_version():
    """`helm install` refuses clusters older than the oldest version the tests validate for."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    oldest, newest = supported_versions()
    assert chart["kubeVersion"] == f">={oldest}.0-0"
    assert newest == kv.latest_version().rsplit(".", 1)[0]  # the newest schemas available


@pytest.mark.parametrize("kube", supported_versions())
def test_every_manifest_is_valid_kubernetes_in_strict_mode(unique_docs, kube: str):
    checked = 0
    for name, doc in unique_docs:
        where = f"{name}: {doc['kind']}/{doc['metadata']['name']} on Kubernetes {kube}"
        try:
            kv.validate(doc, kube, strict=True)
            checked += 1
        except kv.SchemaNotFoundError:
            assert doc["kind"] in CRD_KINDS, where
        except kv.ValidationError as error:
            pytest.fail(f"{where}: {error.message} at {list(error.path)}")
    assert checked > 50


def test_settings_schema_mirrors_the_services_settings_classes(rendered):
    """values.schema.json's `settings` and `gateway.settings` carry the settings classes' own
    types, limits and defaults, and every field a service reads is either such a tunable or
    set by the chart itself (addresses, topics, ports), never both."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    props = schema["properties"]
    pairs = [
        (ServiceSettings, props["settings"]["properties"]),
        (GatewaySettings, props["gateway"]["properties"]["settings"]["properties"]),
    ]
    for model, tunables in pairs:
        fields = model.model_json_schema()["properties"]
        for key, sub in tunables.items():
            for constraint in ("type", "minimum", "maximum", "exclusiveMinimum", "items"):
                assert sub.get(constraint) == fields[key].get(constraint), (key, constraint)
    docs = rendered["defaults"]
    values = chart_values({})
    # the chart's defaults are the services' own: none is changed behind the code's back
    for model, defaults in (
        (ServiceSettings, values["settings"]),
        (GatewaySettings, values["gateway"]["settings"]),
    ):
        for key, value in defaults.items():
            assert value == model.model_fields[key].get_default(call_default_factory=True), key
    classifier = container(of_kind(docs, "Deployment")[component("classifier")])
    by_chart = {v["name"] for v in classifier["env"]} - {
        env_name(ServiceSettings, k) for k in values["settings"]
    }
    tunable = {env_name(ServiceSettings, k) for k in pairs[0][1]}
    every = {env_name(ServiceSettings, f) for f in ServiceSettings.model_fields}
    assert tunable | by_chart >= every
    assert not tunable & by_chart


def value_paths(values: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every key in a values tree (maps only; lists are leaves)."""
    paths = []
    if isinstance(values, dict):
        for key, value in values.items():
            path = f"{prefix}{key}"
            paths.append(path)
            paths += value_paths(value, f"{path}.")
    return paths


def test_every_value_is_documented_with_a_param_line():
    """values.yaml documents every key (Bitnami's `## @param path text`): a key is documented
    by its own line or its parent's (`settings`, a map of the settings classes' fields, is
    documented in the schema field by field); per-service keys as `services.<name>.*`; keys
    under `kafka` and `minio` other than `enabled` are those charts' own values."""
    text = (CHART / "values.yaml").read_text()
    params = {line.split()[2] for line in text.splitlines() if line.startswith("## @param ")}
    defaults = yaml.safe_load(text)
    undocumented = []
    for path in value_paths(defaults):
        parts = path.split(".")
        if parts[0] in ("kafka", "minio") and parts[1:] != ["enabled"]:
            continue
        if parts[0] == "services" and len(parts) > 1:
            parts[1] = "<name>"
        ancestors = {".".join(parts[:n]) for n in range(1, len(parts) + 1)}
        if ancestors & params:
            continue
        own = ".".join(parts)
        if not any(p.startswith(f"{own}.") for p in params):  # a map: its keys are
            undocumented.append(path)
    assert not undocumented
    stale = {p for p in params if p.replace("<name>", "segmenter") not in value_paths(defaults)}
    assert not stale  # a @param line for a key that no longer exists


BAD_VALUES = [
    ({"gateway": {"auth": {"tokens": {"lab1": "clear-text-token"}}}}, "/gateway/auth/tokens/lab1"),
    ({"settings": {"max_attempts": 0}}, "/settings/max_attempts"),
    ({"settings": {"max_attempt": 3}}, "max_attempt"),
    ({"settings": {"s3_backoff_s": 0}}, "/settings/s3_backoff_s"),
    ({"gateway": {"settings": {"gateway_max_images": 0}}}, "/gateway/settings/gateway_max_images"),
    ({"gatway": {"enabled": True}}, "gatway"),
    ({"containerSecurityContext": {"readOnlyRootFilesystem": False}}, "readOnlyRootFilesystem"),
    ({"podSecurityContext": {"runAsNonRoot": False}}, "/podSecurityContext/runAsNonRoot"),
    ({"triton": {"gpus": -1}}, "/triton/gpus"),
    ({"triton": {"modelRepository": "/models"}}, "/triton/modelRepository"),
    ({"services": {"classifier": {"image": {"digest": "latest"}}}}, "image/digest"),
    ({"services": {"segmenter": {"inputTopics": []}}}, "/services/segmenter/inputTopics"),
    (
        {"services": {"measurer": {"autoscaling": {"targetCPUUtilizationPercentage": 150}}}},
        "targetCPUUtilizationPercentage",
    ),
    ({"externalKafka": {"bootstrapServers": "kafka://broker:9092"}}, "bootstrapServers"),
    ({"s3": {"bucket": "Plankline_Data"}}, "/s3/bucket"),
    ({"serviceMonitor": {"interval": "often"}}, "/serviceMonitor/interval"),
]


@pytest.mark.parametrize(("bad", "where"), BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_values_the_schema_rejects(bad: dict[str, Any], where: str):
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema({})  # the defaults pass: the refusal below is the bad value's
        with pytest.raises(helm.HelmValuesError, match=re.escape(where)):
            chart.render(bad, name=RELEASE, namespace=NAMESPACE)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kafka": {"enabled": False}}, "externalKafka.bootstrapServers is required"),
        ({"minio": {"enabled": False}}, "externalS3.endpoint is required"),
        ({"minio": {"existingSecret": "another"}}, "must name the services' S3 Secret"),
        ({"s3": {"accessKeyKey": "access-key"}}, "keys must be rootUser/rootPassword"),
        ({"gateway": {"tls": {"enabled": True}}}, "needs gateway.tls.existingSecret"),
    ],
)
def test_inconsistent_values_fail_the_render_with_the_fix(values: dict[str, Any], message: str):
    with pytest.raises(helm.HelmRenderError, match=message):
        render(values)


# ---------------------------------------------------------------------------- what services read


def test_every_setting_a_service_reads_is_set_by_the_chart(rendered, monkeypatch):
    """Each pipeline Deployment sets every ServiceSettings field (derived from the class, not
    a list), the values parse in the class itself, and they agree with the code's contracts
    (topics, consumer group, handler factory) and with the rendered Services and ports."""
    expected = {env_name(ServiceSettings, f) for f in ServiceSettings.model_fields}
    for name, docs in rendered.items():
        values = chart_values(user_values(name))
        deployments = of_kind(docs, "Deployment")
        services = of_kind(docs, "Service")
        for service, (factory, topics) in launch.SERVICES.items():
            deployment = deployments[component(service)]
            env = resolved_env(deployment, docs)
            missing = expected - env.keys()
            assert not missing, f"{name}/{service} does not set {sorted(missing)}"
            settings = settings_from(ServiceSettings, env, monkeypatch)
            main = container(deployment)
            assert factory in main["args"]
            assert (settings.service_name, settings.group_id) == (service, service)
            assert settings.input_topics == topics
            assert settings.http_host == "0.0.0.0"
            ports = {p["name"]: p["containerPort"] for p in main["ports"]}
            assert settings.http_port == ports["http"]
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert main[probe]["httpGet"]["port"] == "http"
            assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
            volume, _ = mounted_file(deployment, f"{settings.work_dir}/x")
            assert "emptyDir" in volume  # the only writable place of a read-only pod
            if values["kafka"]["enabled"]:
                assert settings.bootstrap_servers == f"{RELEASE}-kafka:9092"
            else:
                assert settings.bootstrap_servers == values["externalKafka"]["bootstrapServers"]
            if values["minio"]["enabled"]:
                assert settings.s3_endpoint == f"{RELEASE}-minio:9000"
                assert not settings.s3_secure
            else:
                assert settings.s3_endpoint == values["externalS3"]["endpoint"]
                assert settings.s3_secure == values["externalS3"]["secure"]
            assert settings.s3_bucket == values["s3"]["bucket"]
            assert settings.s3_secret_key.get_secret_value()
            overrides = values["services"][service]["settings"]
            for field, value in (values["settings"] | overrides).items():
                assert getattr(settings, field) == value, (name, service, field)
            if values["triton"]["enabled"]:
                assert settings.inference == "triton"
                host, port = settings.triton_url.rsplit(":", 1)
                grpc = {p["name"]: p["port"] for p in services[host]["spec"]["ports"]}["grpc"]
                assert int(port) == grpc
                assert settings.triton_model == launch.TRITON_MODEL
            else:
                assert settings.inference == "onnxruntime"


def test_bundled_kafka_creates_every_topic_with_room_for_the_replicas():
    """The bundled broker creates the code's topics (contracts.TOPICS, dead letters included)
    with at least as many partitions as any service may have replicas: a consumer group
    member beyond the partition count idles."""
    for name in VALUE_SETS:
        values = chart_values(user_values(name))
        if not values["kafka"]["enabled"]:
            continue
        provisioning = values["kafka"]["provisioning"]
        assert provisioning["enabled"]
        topics = {t["name"] for t in provisioning["topics"]}
        assert topics == set(contracts.TOPICS) | {values["settings"]["dead_letter_topic"]}
        partitions = provisioning["numPartitions"]
        for service, svc in values["services"].items():
            most = max(
                svc["replicaCount"],
                svc["autoscaling"]["maxReplicas"],
                svc["keda"]["maxReplicaCount"],
            )
            assert most <= partitions, (name, service)


def test_every_setting_the_gateway_reads_is_set_by_the_chart(rendered, monkeypatch):
    for name, docs in rendered.items():
        values = chart_values(user_values(name))
        deployment = of_kind(docs, "Deployment")[component("gateway")]
        env = resolved_env(deployment, docs)
        tls = values["gateway"]["tls"]
        skip = set(GATEWAY_NOT_SET)
        if not tls["enabled"]:
            skip |= {"gateway_tls_cert", "gateway_tls_key", "gateway_tls_client_ca"}
        elif not tls["clientCA"]:
            skip.add("gateway_tls_client_ca")
        expected = {env_name(GatewaySettings, f) for f in GatewaySettings.model_fields}
        missing = expected - {env_name(GatewaySettings, f) for f in skip} - env.keys()
        assert not missing, f"{name}/gateway does not set {sorted(missing)}"
        settings = settings_from(GatewaySettings, env, monkeypatch)
        main = container(deployment)
        assert settings.gateway_host == "0.0.0.0"
        assert (
            settings.gateway_port == {p["name"]: p["containerPort"] for p in main["ports"]}["grpc"]
        )
        assert not settings.gateway_allow_unauthenticated
        # the token table: a mounted Secret key, in the format the gateway accepts
        volume, key = mounted_file(deployment, settings.gateway_tokens_file)
        (item,) = volume["secret"]["items"]
        assert item["path"] == key
        secrets = of_kind(docs, "Secret")
        table = base64.b64decode(secrets[volume["secret"]["secretName"]]["data"][item["key"]])
        parsed = auth.parse_table(table.decode(), "tokens Secret")
        wanted = {
            lab: digest.lower().removeprefix("sha256:")
            for lab, digest in values["gateway"]["auth"]["tokens"].items()
        }
        assert parsed == wanted
        if tls["enabled"]:
            for path, key in (
                (settings.gateway_tls_cert, "tls.crt"),
                (settings.gateway_tls_key, "tls.key"),
                (settings.gateway_tls_client_ca, "ca.crt"),
            ):
                if path is None:  # no client CA: TLS without client certificates
                    assert not tls["clientCA"]
                    continue
                volume, in_volume = mounted_file(deployment, path)
                assert volume["secret"]["secretName"] == tls["existingSecret"]
                assert in_volume == key  # the keys of a kubernetes.io/tls Secret (+ ca.crt)


# ---------------------------------------------------------------------------- pods and traffic


def dockerfile_targets(path: Path) -> dict[str, dict[str, Any]]:
    """Per build stage of a Dockerfile: ENTRYPOINT, CMD, USER and EXPOSE, inherited from the
    stage it is built FROM (exec-form JSON instructions only, as docker/Dockerfile writes)."""
    stages: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] = {}
    for line in path.read_text().splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "FROM":
            base, _, name = rest.partition(" AS ")
            current = dict(stages.get(base.strip(), {}))
            stages[name.strip() or base] = current
        elif word in ("ENTRYPOINT", "CMD"):
            current[word] = json.loads(rest)
        elif word == "USER":
            current[word] = rest.strip()
        elif word == "EXPOSE":
            current[word] = {int(port) for port in rest.split()}
    return stages


def test_pods_run_the_images_own_commands_user_and_ports(rendered):
    """The chart spells out each container's command and user: they must be the ones the
    images of docker/Dockerfile are built with (a chart `args` after an image ENTRYPOINT would
    run `python -m runner python -m runner ...`)."""
    dockerfile = ROOT / "docker" / "Dockerfile"
    if not dockerfile.is_file():
        pytest.skip("docker/Dockerfile not in this checkout")
    stages = dockerfile_targets(dockerfile)
    docs = rendered["defaults"]
    for name in [*launch.SERVICES, "gateway"]:
        image = stages[name]
        deployment = of_kind(docs, "Deployment")[component(name)]
        main = container(deployment)
        assert main["command"] == image["ENTRYPOINT"], name
        assert main.get("args", image.get("CMD")) == image.get("CMD"), name
        assert main["image"].startswith(f"plankline-{name}:"), name
        pod = deployment["spec"]["template"]["spec"]["securityContext"]
        assert image["USER"] == f"{pod['runAsUser']}:{pod['runAsGroup']}", name
        assert {p["containerPort"] for p in main["ports"]} == image["EXPOSE"], name


def test_every_pod_runs_non_root_read_only_without_capabilities(rendered):
    for name, docs in rendered.items():
        pods = [*of_kind(docs, "Deployment").values()]
        pods += [
            {"metadata": p["metadata"], "spec": {"template": p}}
            for p in of_kind(docs, "Pod").values()
        ]
        for deployment in pods:
            where = f"{name}/{deployment['metadata']['name']}"
            spec = deployment["spec"]["template"]["spec"]
            assert spec["automountServiceAccountToken"] is False, where
            pod = spec["securityContext"]
            assert pod["runAsNonRoot"] and pod["runAsUser"] >= 10000, where
            assert pod["seccompProfile"]["type"] == "RuntimeDefault", where
            main = container(deployment)
            ctx = main["securityContext"]
            assert ctx["readOnlyRootFilesystem"] and not ctx["allowPrivilegeEscalation"], where
            assert ctx["capabilities"]["drop"] == ["ALL"], where
            volume, _ = mounted_file(deployment, "/tmp/x")
            assert "emptyDir" in volume, where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= main["resources"][kind].keys(), where
            if deployment.get("kind") == "Deployment":  # not the one-shot `helm test` Pod
                assert {"livenessProbe", "readinessProbe", "startupProbe"} <= main.keys(), where


def test_triton_serves_the_s3_model_repository_on_gpus_and_is_ready_on_its_health(rendered):
    for name in ("defaults", "external", "gpu-triton"):
        docs = rendered[name]
        values = chart_values(user_values(name))
        triton = values["triton"]
        deployment = of_kind(docs, "Deployment")[component("triton")]
        main = container(deployment)
        repo, tag = main["image"].split("@")[0].rsplit(":", 1)
        assert repo == "nvcr.io/nvidia/tritonserver" and tag == triton["image"]["tag"] != "latest"
        if values["minio"]["enabled"]:
            s3 = f"s3://{RELEASE}-minio:9000"
        else:
            scheme = "https://" if values["externalS3"]["secure"] else ""
            s3 = f"s3://{scheme}{values['externalS3']['endpoint']}"
        prefix = triton["modelRepositoryPrefix"]
        assert f"--model-repository={s3}/{values['s3']['bucket']}/{prefix}" in main["args"]
        http = next(a for a in main["args"] if a.startswith("--http-port="))
        ports = {p["name"]: p["containerPort"] for p in main["ports"]}
        assert int(http.split("=")[1]) == ports["http"]
        assert main["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
        gpus = triton["gpus"]
        assert main["resources"]["limits"]["nvidia.com/gpu"] == gpus >= 1
        spec = deployment["spec"]["template"]["spec"]
        assert spec["nodeSelector"] == triton["nodeSelector"]
        assert spec["tolerations"] == triton["tolerations"]
        assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
        # Triton's S3 client reads the same credentials as the services
        env = {v["name"]: v for v in main["env"]}
        classifier = container(of_kind(docs, "Deployment")[component("classifier")])
        service_env = {v["name"]: v for v in classifier["env"]}
        assert (
            env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]
            == service_env["PLANKLINE_S3_SECRET_KEY"]["valueFrom"]
        )


def test_without_triton_the_cuda_classifier_gets_a_gpu_and_infers_in_process(rendered):
    docs = rendered["classifier-cuda"]
    assert component("triton") not in of_kind(docs, "Deployment")
    deployment = of_kind(docs, "Deployment")[component("classifier")]
    main = container(deployment)
    env = {v["name"]: v.get("value") for v in main["env"]}
    assert env["PLANKLINE_INFERENCE"] == "onnxruntime"
    assert main["image"].split("/")[-1].startswith("plankline-classifier-cuda:")
    assert main["resources"]["limits"]["nvidia.com/gpu"] == 1
    spec = deployment["spec"]["template"]["spec"]
    assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])


def test_gateway_is_served_over_tls_with_grpc_to_its_pods(rendered):
    for name, backend, probe in (
        ("defaults", None, "grpc"),
        ("ingress-tls", "GRPC", "grpc"),
        ("pod-tls", "GRPCS", "tcpSocket"),
        ("pod-mtls", "passthrough", "tcpSocket"),  # the client certificate reaches the pod
    ):
        docs = rendered[name]
        values = chart_values(user_values(name))
        deployment = of_kind(docs, "Deployment")[component("gateway")]
        main = container(deployment)
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert probe in main[kind], (name, kind)  # the kubelet's gRPC probe has no TLS
        if probe == "grpc":
            assert main["readinessProbe"]["grpc"]["port"] == values["gateway"]["port"]
        ingresses = of_kind(docs, "Ingress")
        if backend is None:
            assert not ingresses
            continue
        (ingress,) = ingresses.values()
        annotations = ingress["metadata"]["annotations"]
        if backend == "passthrough":
            assert annotations["nginx.ingress.kubernetes.io/ssl-passthrough"] == "true"
            assert "nginx.ingress.kubernetes.io/backend-protocol" not in annotations
        else:
            assert annotations["nginx.ingress.kubernetes.io/backend-protocol"] == backend
        ing = values["gateway"]["ingress"]
        assert ingress["spec"]["tls"] == [{"hosts": [ing["host"]], "secretName": ing["tlsSecret"]}]
        (rule,) = ingress["spec"]["rules"]
        target = rule["http"]["paths"][0]["backend"]["service"]
        service = of_kind(docs, "Service")[target["name"]]
        assert target["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
        assert selects(
            service["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"]
        )


def test_network_policies_admit_only_the_ports_each_pod_serves(rendered):
    for name, docs in rendered.items():
        policies = of_kind(docs, "NetworkPolicy").values()
        pods = {
            n: d["spec"]["template"]["metadata"]["labels"]
            for n, d in of_kind(docs, "Deployment").items()
        }
        for deployment_name, labels in pods.items():
            mine = [p for p in policies if selects(p["spec"]["podSelector"]["matchLabels"], labels)]
            assert len(mine) == 1, (name, deployment_name)
            (policy,) = mine
            deployment = of_kind(docs, "Deployment")[deployment_name]
            served = {p["containerPort"] for p in container(deployment)["ports"]}
            for rule in policy["spec"]["ingress"]:
                assert {p["port"] for p in rule["ports"]} <= served, (name, deployment_name)
            assert any(
                {"protocol": "UDP", "port": 53} in rule.get("ports", [])
                for rule in policy["spec"]["egress"]
            )
        triton = component("triton")
        if triton in pods:
            (policy,) = [
                p
                for p in policies
                if selects(p["spec"]["podSelector"]["matchLabels"], pods[triton])
            ]
            grpc_rules = [
                r
                for r in policy["spec"]["ingress"]
                if {"protocol": "TCP", "port": 8001} in r["ports"]
            ]
            assert any(
                selects(peer["podSelector"]["matchLabels"], pods[component("classifier")])
                for rule in grpc_rules
                for peer in rule["from"]
                if "podSelector" in peer
            ), name


def admits(policy: dict[str, Any], labels: dict[str, str], port: int) -> bool:
    """Whether a NetworkPolicy lets a pod of this namespace with ``labels`` in on ``port``."""
    for rule in policy["spec"]["ingress"]:
        if not any(p["port"] == port for p in rule.get("ports", [])):
            continue
        peers = rule.get("from")
        if peers is None or any(
            "podSelector" in peer
            and "namespaceSelector" not in peer
            and selects(peer["podSelector"]["matchLabels"], labels)
            for peer in peers
        ):
            return True
    return False


def test_helm_test_pod_checks_every_component_the_policies_let_it_reach(rendered):
    """`helm test`'s Pod probes every service's /readyz, Triton's health and model, and the
    gateway's gRPC health, at rendered Services, through the NetworkPolicies."""
    for name in ("defaults", "ingress-tls", "pod-mtls", "pinned-cpu"):
        docs = rendered[name]
        values = chart_values(user_values(name))
        (pod,) = of_kind(docs, "Pod").values()
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        (main,) = pod["spec"]["containers"]
        compile(main["args"][0], "smoke-test", "exec")  # the script is valid Python
        env = {v["name"]: v["value"] for v in main["env"]}
        services = of_kind(docs, "Service")
        deployments = of_kind(docs, "Deployment")
        policies = of_kind(docs, "NetworkPolicy")
        pod_labels = pod["metadata"]["labels"]
        targets = [url.removeprefix("http://") for url in json.loads(env["SMOKE_HTTP"])]
        targets = [t.split("/", 1)[0] for t in targets] + [env["SMOKE_GRPC"]]
        paths = [u.split("/", 3)[3] for u in json.loads(env["SMOKE_HTTP"])]
        expected = ["readyz"] * len(launch.SERVICES)
        if values["triton"]["enabled"]:
            expected += ["v2/health/ready", f"v2/models/{launch.TRITON_MODEL}/ready"]
        assert sorted(paths) == sorted(expected), name
        for target in targets:
            host, port = target.rsplit(":", 1)
            service = services[host]
            (svc_port,) = [p for p in service["spec"]["ports"] if p["port"] == int(port)]
            (deployment,) = [
                d
                for d in deployments.values()
                if selects(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
            ]
            ports = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
            container_port = ports[svc_port["targetPort"]]
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            (policy,) = [
                p
                for p in policies.values()
                if selects(p["spec"]["podSelector"]["matchLabels"], labels)
            ]
            assert admits(policy, pod_labels, container_port), (name, target)


def test_disruption_budgets_and_autoscalers_target_rendered_deployments(rendered):
    for name, docs in rendered.items():
        deployments = of_kind(docs, "Deployment")
        budgets = of_kind(docs, "PodDisruptionBudget")
        assert len(budgets) == len(deployments), name
        for budget in budgets.values():
            matching = [
                d
                for d in deployments.values()
                if selects(
                    budget["spec"]["selector"]["matchLabels"],
                    d["spec"]["template"]["metadata"]["labels"],
                )
            ]
            assert len(matching) == 1, (name, budget["metadata"]["name"])
        for hpa in of_kind(docs, "HorizontalPodAutoscaler").values():
            target = deployments[hpa["spec"]["scaleTargetRef"]["name"]]
            assert "replicas" not in target["spec"]  # the HPA owns the replica count
    assert of_kind(rendered["autoscaling"], "HorizontalPodAutoscaler")


def test_crd_objects_point_at_what_the_chart_renders(rendered):
    """ScaledObjects scale a rendered Deployment on its own consumer group and input topics
    (and no HPA fights them); ServiceMonitors select a Service whose port serves /metrics."""
    docs = rendered["autoscaling"]
    deployments = of_kind(docs, "Deployment")
    scaled = of_kind(docs, "ScaledObject")
    assert {component("segmenter"), component("classifier")} == set(scaled)
    hpa_targets = {
        h["spec"]["scaleTargetRef"]["name"]
        for h in of_kind(docs, "HorizontalPodAutoscaler").values()
    }
    for obj in scaled.values():
        assert obj["apiVersion"] == "keda.sh/v1alpha1"
        target = obj["spec"]["scaleTargetRef"]["name"]
        assert target not in hpa_targets
        deployment = deployments[target]
        assert "replicas" not in deployment["spec"]
        env = {v["name"]: v.get("value") for v in container(deployment)["env"]}
        triggers = obj["spec"]["triggers"]
        assert [t["metadata"]["topic"] for t in triggers] == json.loads(
            env["PLANKLINE_INPUT_TOPICS"]
        )
        for trigger in triggers:
            assert trigger["type"] == "kafka"
            assert trigger["metadata"]["consumerGroup"] == env["PLANKLINE_GROUP_ID"]
            assert trigger["metadata"]["bootstrapServers"] == env["PLANKLINE_BOOTSTRAP_SERVERS"]
    monitors = of_kind(docs, "ServiceMonitor")
    assert len(monitors) == len(launch.SERVICES) + 1  # the services and Triton
    services = of_kind(docs, "Service")
    for monitor in monitors.values():
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        (service,) = [
            s
            for s in services.values()
            if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        (endpoint,) = monitor["spec"]["endpoints"]
        (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
        (deployment,) = [
            d
            for d in deployments.values()
            if selects(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
        ]
        served = {p["name"] for p in container(deployment)["ports"]}
        assert port["targetPort"] in served and endpoint["path"] == "/metrics"


# ---------------------------------------------------------------------------- checkov


@pytest.fixture(scope="session")
def checkov() -> str:
    """A checkov executable (see ``tool_venvs``: installed in the background at collection)."""
    try:
        return tool_venvs.checkov_executable()
    except RuntimeError as error:
        pytest.skip(str(error))


def test_checkov_finds_no_failed_check_and_every_skip_says_why(unique_docs, checkov, tmp_path):
    """Every value set's manifests, deduplicated, scanned as Kubernetes manifests. A skipped
    check is one the chart annotates (checkov.io/skipN) with its reason; the image-digest
    check is skipped only where no digest is set, and passes where one is."""
    origin: dict[str, str] = {}
    for index, (name, doc) in enumerate(unique_docs):
        file = f"{index:03d}-{name}-{doc['kind']}.yaml"
        (tmp_path / file).write_text(yaml.safe_dump(doc))
        origin[file] = name
    done = subprocess.run(
        [
            checkov,
            "--framework",
            "kubernetes",
            "--skip-download",
            "-d",
            str(tmp_path),
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(done.stdout)
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["resource_count"] >= len(unique_docs)
    results = report["results"]
    failed = [(c["check_id"], c["check_name"], c["resource"]) for c in results["failed_checks"]]
    assert not failed, failed
    skipped = results["skipped_checks"]
    assert skipped  # the documented skips are seen by the scan
    for check in skipped:
        assert len(check["check_result"]["suppress_comment"]) > 20, check["check_id"]
        if check["check_id"] == "CKV_K8S_43":
            assert origin[Path(check["file_path"]).name] != "pinned-cpu"
    pinned = {
        c["resource"]
        for c in results["passed_checks"]
        if c["check_id"] == "CKV_K8S_43" and origin[Path(c["file_path"]).name] == "pinned-cpu"
    }
    assert len(pinned) == len(launch.SERVICES) + 2  # four services, the gateway, helm test
