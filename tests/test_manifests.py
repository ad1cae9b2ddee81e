"""Every manifest under infra/, validated offline (no cluster, no registry, no Ray started).

* Every ``*.yaml``/``*.yml`` file parses, every document in it; a duplicate key is an error (the
  API server's strict field validation rejects duplicate fields; PyYAML would keep the last one).
* KubeRay kinds (``ray.io/v1``): the v1 ``openAPIV3Schema`` of the CRD in
  ``../shared/anchors/kuberay-crds/`` (KubeRay v1.7.0), made strict the way the API server treats
  unknown fields (an object schema listing ``properties`` admits nothing else unless it says
  ``x-kubernetes-preserve-unknown-fields: true``), plus ``nullable``, int-or-string, int32/int64,
  ``x-kubernetes-list-type`` set/map uniqueness; ``metadata`` against the upstream ObjectMeta; the
  name rules of KubeRay's own validation. CEL rules (``x-kubernetes-validations``) are not evaluated.
* RayService: ``serveConfigV2`` (a YAML string) against the field names of Ray Serve's
  ``ServeDeploySchema`` (read from ray/serve/schema.py, which itself accepts unknown fields).
* Core kinds: ``kubernetes-validate`` in strict mode, the newest Kubernetes version it ships.
* ``infra/ray-cluster.yaml`` (Ray cluster launcher): ``ray/autoscaler/ray-schema.json`` from the
  installed Ray.
* Across files: secrets, head-service addresses, Ray version, images, index location, Dockerfiles.
"""
from __future__ import annotations

import ast
import copy
import functools
import importlib.util
import io
import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

jsonschema = pytest.importorskip("jsonschema")

REPO = Path(__file__).resolve().parent.parent
INFRA = REPO / "infra"
KUBERAY_CRDS = {"RayCluster": "rayclusters", "RayJob": "rayjobs", "RayCronJob": "raycronjobs",
                "RayService": "rayservices"}
# KubeRay's ValidateRay*Metadata: DNS-1035 labels, short enough for "<name>-xxxxx-serve-svc" & co.
KUBERAY_NAME_MAX = {"RayCluster": 53, "RayService": 47, "RayJob": 47}
SERVE_IMPORT = ("snappy_pipelines.serve", "build_app")  # module, application builder (takes an args dict)
SERVE_PORT = 8000
IMAGES = {"registry.example.com/snappy:cpu", "registry.example.com/snappy:gpu"}
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


# --------------------------------------------------------------------------------------- YAML

class StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """Safe loader that refuses duplicate mapping keys."""


def _construct_mapping(loader, node, deep=False):
    loader.flatten_mapping(node)
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_documents(text: str) -> list:
    return [d for d in yaml.load_all(text, Loader=StrictLoader) if d is not None]


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _label(doc) -> str:
    if isinstance(doc, dict) and "kind" in doc:
        return f"{doc['kind']}/{(doc.get('metadata') or {}).get('name', '?')}"
    if isinstance(doc, dict) and "cluster_name" in doc:
        return f"ray-cluster-launcher/{doc['cluster_name']}"
    return type(doc).__name__


YAML_FILES = sorted(p for p in INFRA.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml"))


def _all_documents() -> list[tuple[Path, int, object]]:
    out = []
    for path in YAML_FILES:
        try:
            docs = load_documents(path.read_text())
        except yaml.YAMLError:
            continue  # test_yaml_parses names the file
        out += [(path, i, doc) for i, doc in enumerate(docs)]
    return out


DOCUMENTS = _all_documents()


def _k8s(kind: str | None = None) -> list[dict]:
    return [d for p, _, d in DOCUMENTS if p.parent.name == "k8s" and isinstance(d, dict)
            and (kind is None or d.get("kind") == kind)]


def _walk(node, path=()):
    """(json path tuple, value) for every node of a parsed document."""
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, path + (i,))


def _json_path(parts) -> str:
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if re.fullmatch(r"[A-Za-z_][\w-]*", str(p)) else f"[{p!r}]")
    return out


def _containers(doc):
    """(json path, container) for every container of every pod template in the document."""
    for path, node in _walk(doc):
        if path and path[-1] in ("containers", "initContainers") and isinstance(node, list):
            for i, c in enumerate(node):
                if isinstance(c, dict):
                    yield path + (i,), c


# ------------------------------------------------------------------- schemas made API-server strict

def strict_schema(schema):
    """An OpenAPI v3 CRD schema as a Draft 7 schema that rejects what the API server rejects.

    Objects that list ``properties`` get ``additionalProperties: false`` unless they preserve
    unknown fields; ``nullable: true`` admits null; ``x-kubernetes-int-or-string`` admits both.
    """
    if isinstance(schema, list):
        return [strict_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {name: strict_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = strict_schema(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [strict_schema(s) for s in value]
        else:
            out[key] = value  # enum, default, required, x-kubernetes-*: data, not subschemas
    preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
    if "properties" in schema and "additionalProperties" not in schema and not preserve:
        out["additionalProperties"] = False
    if schema.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if schema.get("x-kubernetes-int-or-string") and "anyOf" not in schema and "type" not in schema:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


def _list_type(validator, list_type, instance, schema):
    """x-kubernetes-list-type: a 'set' has no duplicates, a 'map' no two items with the same keys."""
    if not validator.is_type(instance, "array"):
        return
    if list_type == "set":
        for i, item in enumerate(instance):
            if item in instance[:i]:
                yield jsonschema.ValidationError(f"duplicate entry {item!r} in a list of type set", path=[i])
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        props = (schema.get("items") or {}).get("properties", {})
        seen = {}
        for i, item in enumerate(instance):
            if not isinstance(item, dict):
                continue
            ident = tuple(item.get(k, props.get(k, {}).get("default")) for k in keys)
            if ident in seen:
                named = ", ".join(f"{k}={v}" for k, v in zip(keys, ident))
                yield jsonschema.ValidationError(f"duplicate entry ({named}) in a list of type map "
                                                 f"(same as item {seen[ident]})", path=[i])
            seen[ident] = i


CRDValidator = jsonschema.validators.extend(jsonschema.Draft7Validator, {"x-kubernetes-list-type": _list_type})
FORMATS = jsonschema.FormatChecker(formats=())


def _int_in(bits):
    return lambda v: not isinstance(v, int) or isinstance(v, bool) or -2 ** (bits - 1) <= v < 2 ** (bits - 1)


FORMATS.checks("int32")(_int_in(32))
FORMATS.checks("int64")(_int_in(64))
FORMATS.checks("int-or-string")(lambda v: isinstance(v, (int, str)) and not isinstance(v, bool))


def _messages(errors, limit: int = 10) -> list[str]:
    out = []
    for e in sorted(errors, key=lambda e: list(map(str, e.absolute_path)))[:limit]:
        path = _json_path(e.absolute_path)
        if e.validator == "additionalProperties" and isinstance(e.instance, dict):
            known = set(e.schema.get("properties", {}))
            out += [f"{path}.{k}: unknown field" for k in sorted(set(e.instance) - known)]
            continue
        if e.context:  # anyOf/oneOf: the branch that came closest
            best = jsonschema.exceptions.best_match(e.context)
            out.append(f"{_json_path(best.absolute_path)}: {best.message[:300]}")
            continue
        out.append(f"{path}: {e.message[:300]}")
    return out


@functools.cache
def _k8s_validate():
    return pytest.importorskip("kubernetes_validate")


@functools.cache
def _object_meta_validator():
    kv = _k8s_validate()
    version = kv.latest_version()
    folder = Path(kv.__file__).parent / "kubernetes-json-schema" / f"v{version}-local-strict"
    defs = json.loads((folder / "_definitions.json").read_text())
    from referencing import Registry, Resource

    registry = Registry().with_resource(defs["$id"], Resource.from_contents(defs))
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              "$id": "https://kubernetes.io/api/snappy-objectmeta.json",
              "$ref": "_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


@pytest.fixture(scope="module")
def kuberay(anchors_dir):
    """kind -> strict validator of that kind's CRD (v1), each CRD loaded once, when first needed."""
    folder = anchors_dir / "kuberay-crds"

    @functools.cache
    def validator(kind: str):
        crd = yaml.load((folder / f"ray.io_{KUBERAY_CRDS[kind]}.yaml").read_text(), Loader=StrictLoader)
        assert crd["spec"]["names"]["kind"] == kind
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        schema = strict_schema(version["schema"]["openAPIV3Schema"])
        schema["properties"]["metadata"] = {"type": "object"}  # checked against ObjectMeta instead
        CRDValidator.check_schema(schema)
        return CRDValidator(schema, format_checker=FORMATS)

    return validator


# ---------------------------------------------------------------------------- the validations

def kuberay_problems(doc: dict, validator_for) -> list[str]:
    kind = doc["kind"]
    if doc.get("apiVersion") != "ray.io/v1":
        return [f"$.apiVersion: {doc.get('apiVersion')!r} (use ray.io/v1)"]
    problems = _messages(validator_for(kind).iter_errors(doc))
    meta = doc.get("metadata") or {}
    problems += [m.replace("$", "$.metadata", 1) for m in _messages(_object_meta_validator().iter_errors(meta))]
    name = meta.get("name", "")
    if not DNS1035.match(name):
        problems.append(f"$.metadata.name: {name!r} is not a DNS-1035 label (KubeRay refuses it)")
    if len(name) > KUBERAY_NAME_MAX.get(kind, 63):
        problems.append(f"$.metadata.name: longer than {KUBERAY_NAME_MAX.get(kind, 63)} characters")
    for path, cluster in _walk(doc):  # the operator's ValidateRayClusterSpec rules we can see offline
        if not (path and path[-1] in ("spec", "rayClusterSpec", "rayClusterConfig") and isinstance(cluster, dict)
                and "headGroupSpec" in cluster):
            continue
        autoscaling = cluster.get("enableInTreeAutoscaling", False)
        for i, group in enumerate(cluster.get("workerGroupSpecs") or []):
            where = _json_path(path + ("workerGroupSpecs", i))
            lo, hi, n = group.get("minReplicas"), group.get("maxReplicas"), group.get("replicas")
            if not autoscaling and (lo is None or hi is None):
                problems.append(f"{where}: minReplicas and maxReplicas are required without autoscaling")
            if lo is not None and hi is not None and lo > hi:
                problems.append(f"{where}: minReplicas {lo} > maxReplicas {hi}")
            if n is not None and ((lo is not None and n < lo) or (hi is not None and n > hi)):
                problems.append(f"{where}: replicas {n} outside [minReplicas, maxReplicas]")
    return problems


@functools.cache
def _serve_schema() -> dict[str, set[str]]:
    """Field names of Ray Serve's config models and ProxyLocation values, read from the installed
    Ray's source (importing ray.serve needs its HTTP extras, which this venv may not have)."""
    spec = importlib.util.find_spec("ray")
    if spec is None:
        pytest.skip("ray is not installed")
    serve = Path(spec.submodule_search_locations[0]) / "serve"
    out: dict[str, set[str]] = {}
    for name in ("schema.py", "config.py"):
        for node in ast.parse((serve / name).read_text()).body:
            if isinstance(node, ast.ClassDef) and node.name in (
                    "ServeDeploySchema", "ServeApplicationSchema", "HTTPOptionsSchema", "gRPCOptionsSchema"):
                out[node.name] = {s.target.id for s in node.body
                                  if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
            if isinstance(node, ast.ClassDef) and node.name == "ProxyLocation":
                out["ProxyLocation"] = {s.value.value for s in node.body if isinstance(s, ast.Assign)
                                        and isinstance(s.value, ast.Constant) and isinstance(s.value.value, str)}
    assert {"ServeDeploySchema", "ServeApplicationSchema", "HTTPOptionsSchema", "ProxyLocation"} <= set(out)
    return out


@functools.lru_cache(maxsize=1)
def _distribution():
    """What `pip install .` installs, as setuptools reads it (setup.py + pyproject.toml), without building."""
    import contextlib
    import warnings

    import setuptools
    from distutils.core import run_setup  # setuptools' own copy, once setuptools is imported

    del setuptools

    with contextlib.chdir(REPO), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        return run_setup("setup.py", stop_after="config")


def _project_packages() -> set[str]:
    """Top-level import names `pip install .` gives."""
    return {name.split(".")[0] for name in _distribution().packages}


def _package_dir(pkg: str) -> str:
    """The folder a top-level package is installed from (the package-dir mapping)."""
    return (_distribution().package_dir or {}).get(pkg, pkg)


def _split_import_path(import_path: str) -> tuple[str, str]:
    module, sep, attr = import_path.partition(":")  # Ray accepts "module:attr" and "module.attr"
    return (module, attr) if sep else tuple(import_path.rsplit(".", 1))


def serve_config_problems(doc: dict) -> list[str]:
    where = "$.spec.serveConfigV2"
    raw = (doc.get("spec") or {}).get("serveConfigV2")
    if not isinstance(raw, str):
        return [f"{where}: missing or not a string (KubeRay expects the Serve config as a YAML string)"]
    try:
        cfg = yaml.load(raw, Loader=StrictLoader)
    except yaml.YAMLError as e:
        return [f"{where}: not valid YAML: {e}"]
    if not isinstance(cfg, dict):
        return [f"{where}: not a mapping"]
    fields, problems = _serve_schema(), []

    def unknown(obj, model, path):
        return [f"{path}.{k}: unknown field of Ray Serve's {model}" for k in obj if k not in fields[model]]

    problems += unknown(cfg, "ServeDeploySchema", where)
    if cfg.get("proxy_location", "EveryNode") not in fields["ProxyLocation"]:
        problems.append(f"{where}.proxy_location: {cfg['proxy_location']!r} not in {sorted(fields['ProxyLocation'])}")
    http = cfg.get("http_options") or {}
    problems += unknown(http, "HTTPOptionsSchema", f"{where}.http_options")
    if http.get("port") != SERVE_PORT:
        problems.append(f"{where}.http_options.port: {http.get('port')!r}, expected {SERVE_PORT}")
    if http.get("host") != "0.0.0.0":
        problems.append(f"{where}.http_options.host: {http.get('host')!r} (the proxy must listen on the pod IP)")
    for path, c in _containers(doc):
        for port in c.get("ports") or []:
            if port.get("name") == "serve" and port.get("containerPort") != http.get("port"):
                problems.append(f"{_json_path(path)}.ports: 'serve' is {port.get('containerPort')}, "
                                f"Serve listens on {http.get('port')}")
    head = doc["spec"].get("rayClusterConfig", {}).get("headGroupSpec", {}).get("template", {}).get("spec", {})
    head_ports = {p.get("name") for p in ((head.get("containers") or [{}])[0].get("ports") or [])}
    if "serve" not in head_ports and "serveService" not in doc["spec"]:  # KubeRay builds no serve Service then
        problems.append("$.spec.rayClusterConfig.headGroupSpec.template.spec.containers[0].ports: "
                        "no port named 'serve' (KubeRay needs it to create the serve Service)")
    apps = cfg.get("applications")
    if not apps or not isinstance(apps, list):
        return problems + [f"{where}.applications: no applications"]
    for key in ("name", "route_prefix"):
        values = [a.get(key) for a in apps if isinstance(a, dict)]
        if len(values) != len(set(values)):
            problems.append(f"{where}.applications: duplicate {key}s {values}")
    for i, app in enumerate(apps):
        at = f"{where}.applications[{i}]"
        problems += unknown(app, "ServeApplicationSchema", at)
        if not isinstance(app.get("import_path"), str):
            problems.append(f"{at}.import_path: missing")
            continue
        module, attr = _split_import_path(app["import_path"])
        if module.split(".")[0] not in _project_packages():
            problems.append(f"{at}.import_path: {module!r} is not in a package this project installs "
                            f"({sorted(_project_packages())})")
        if (module, attr) != SERVE_IMPORT:
            problems.append(f"{at}.import_path: {app['import_path']!r}, expected {':'.join(SERVE_IMPORT)}")
        if not str(app.get("route_prefix", "/")).startswith("/"):
            problems.append(f"{at}.route_prefix: must start with /")
    return problems


def core_problems(doc: dict) -> list[str]:
    kv = _k8s_validate()
    try:
        kv.validate(doc, kv.latest_version(), strict=True)
    except kv.ValidationError as e:
        return _messages([e]) if not e.context else [f"{_json_path(e.absolute_path)}: {e.message[:300]}"]
    except kv.utils.SchemaNotFoundError as e:
        return [f"$: {e.message}"]
    name = (doc.get("metadata") or {}).get("name", "")
    if not DNS1123_SUBDOMAIN.match(name) or len(name) > 253:
        return [f"$.metadata.name: {name!r} is not a DNS-1123 subdomain"]
    if doc["kind"] == "CronJob" and len(name) > 52:
        return ["$.metadata.name: a CronJob name has at most 52 characters"]
    return []


@functools.cache
def _launcher_validator():
    spec = importlib.util.find_spec("ray")
    path = Path(spec.submodule_search_locations[0]) / "autoscaler" / "ray-schema.json" if spec else None
    if path is None or not path.is_file():
        pytest.skip("ray/autoscaler/ray-schema.json not found (is ray installed?)")
    schema = json.loads(path.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def launcher_problems(doc: dict) -> list[str]:
    problems = _messages(_launcher_validator().iter_errors(doc))
    types = doc.get("available_node_types") or {}
    if doc.get("head_node_type") not in types:
        problems.append(f"$.head_node_type: {doc.get('head_node_type')!r} not in available_node_types")
    for name, t in types.items():
        if t.get("min_workers", 0) > t.get("max_workers", doc.get("max_workers", 0)):
            problems.append(f"$.available_node_types.{name}: min_workers > max_workers")
    return problems


_QUANTITY = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$")
_SUFFIX = {None: 1, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
           "E": 1e18, **{s: 2 ** (10 * (i + 1)) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))}}
IANA_SVC_NAME = re.compile(r"^(?=.*[a-z])(?!.*--)[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$")


def quantity(value) -> float:
    m = _QUANTITY.match(str(value))
    if not m:
        raise ValueError(f"not a quantity: {value!r}")
    suffix = m.group(2)
    return float(m.group(1)) * (10 ** int(suffix[1:]) if suffix and suffix[0] in "eE" else _SUFFIX[suffix])


def pod_problems(doc: dict) -> list[str]:
    """Pod rules the API server checks beyond the schema: mounts name a volume, unique container
    and port names (IANA service names), requests <= limits, extended resources requests == limits."""
    problems = []
    for path, pod in _walk(doc):
        if not (isinstance(pod, dict) and isinstance(pod.get("containers"), list)):
            continue
        volumes = {v.get("name") for v in pod.get("volumes") or []}
        names = [c.get("name") for c in pod["containers"]]
        if len(names) != len(set(names)):
            problems.append(f"{_json_path(path)}.containers: duplicate container names {names}")
        for i, c in enumerate(pod["containers"]):
            at = _json_path(path + ("containers", i))
            for mount in c.get("volumeMounts") or []:
                if mount.get("name") not in volumes:
                    problems.append(f"{at}.volumeMounts: {mount.get('name')!r} is not a volume of the pod")
            port_names = [p["name"] for p in c.get("ports") or [] if "name" in p]
            if len(port_names) != len(set(port_names)):
                problems.append(f"{at}.ports: duplicate port names {port_names}")
            problems += [f"{at}.ports: {n!r} is not an IANA service name" for n in port_names
                         if not IANA_SVC_NAME.match(n)]
            res = c.get("resources") or {}
            requests, limits = res.get("requests") or {}, res.get("limits") or {}
            try:
                [quantity(q) for q in (*requests.values(), *limits.values())]
            except ValueError as e:
                problems.append(f"{at}.resources: {e}")
                continue
            for name in sorted(set(requests) | set(limits)):
                native = name in ("cpu", "memory", "ephemeral-storage") or name.startswith("hugepages-")
                if name in requests and name in limits and quantity(requests[name]) > quantity(limits[name]):
                    problems.append(f"{at}.resources: {name} request {requests[name]} > limit {limits[name]}")
                if not native and "/" in name and (name not in limits or name in requests
                                                   and quantity(requests[name]) != quantity(limits[name])):
                    problems.append(f"{at}.resources: extended resource {name} needs a limit equal to its request")
    return problems


def document_problems(doc, validator_for) -> list[str]:
    if not isinstance(doc, dict):
        return [f"$: a {type(doc).__name__}, not a mapping"]
    if "apiVersion" not in doc and "cluster_name" in doc and "provider" in doc:
        return launcher_problems(doc)
    if "apiVersion" not in doc or "kind" not in doc:
        return ["$: neither a Kubernetes object (apiVersion, kind) nor a Ray cluster launcher config"]
    if str(doc["apiVersion"]).startswith("ray.io/"):
        if doc["kind"] not in KUBERAY_CRDS:
            return [f"$.kind: {doc['kind']!r} is not a KubeRay kind ({sorted(KUBERAY_CRDS)})"]
        problems = kuberay_problems(doc, validator_for)
        if doc["kind"] == "RayService":
            problems += serve_config_problems(doc)
        return problems + pod_problems(doc)
    return core_problems(doc) + pod_problems(doc)


# ---------------------------------------------------------------------------------- the tests

def test_infra_has_manifests():
    names = {_rel(p) for p in YAML_FILES}
    assert {"infra/ray-cluster.yaml", "infra/k8s/raycluster.yaml", "infra/k8s/rayservice.yaml"} <= names


@pytest.mark.parametrize("path", YAML_FILES, ids=_rel)
def test_yaml_parses(path):
    try:
        docs = load_documents(path.read_text())
    except yaml.YAMLError as e:
        pytest.fail(f"{_rel(path)} is not valid YAML: {e}")
    assert docs, f"{_rel(path)} has no document"


@pytest.mark.parametrize("path,index,doc", [pytest.param(p, i, d, id=f"{_rel(p)}#{i}:{_label(d)}")
                                             for p, i, d in DOCUMENTS])
def test_document_is_valid(path, index, doc, request):
    needs_crd = isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith("ray.io/")
    validator_for = request.getfixturevalue("kuberay") if needs_crd else None
    problems = document_problems(doc, validator_for)
    assert not problems, f"{_rel(path)} document {index} ({_label(doc)}):\n  " + "\n  ".join(problems)


def test_invalid_yaml_and_duplicate_keys_fail():
    with pytest.raises(yaml.YAMLError):
        load_documents("a: [1, 2\nb: 3\n")
    with pytest.raises(yaml.YAMLError, match="duplicate key 'replicas'"):
        load_documents("spec:\n  replicas: 1\n  replicas: 2\n")
    assert len(load_documents("---\na: 1\n---\nb: 2\n---\n")) == 2


def test_strict_schema_rules():
    schema = strict_schema({"type": "object", "properties": {
        "known": {"type": "string", "nullable": True},
        "free": {"type": "object", "properties": {"x": {"type": "integer"}},
                 "x-kubernetes-preserve-unknown-fields": True},
        "port": {"x-kubernetes-int-or-string": True},
        "ports": {"type": "array", "x-kubernetes-list-type": "map",
                  "x-kubernetes-list-map-keys": ["containerPort", "protocol"],
                  "items": {"type": "object", "properties": {"containerPort": {"type": "integer", "format": "int32"},
                                                             "protocol": {"type": "string", "default": "TCP"}}}}}})
    v = CRDValidator(schema, format_checker=FORMATS)
    assert not list(v.iter_errors({"known": None, "free": {"x": 1, "anything": 2}, "port": "http"}))
    assert _messages(v.iter_errors({"knwon": "a"})) == ["$.knwon: unknown field"]
    assert _messages(v.iter_errors({"port": 1.5}))
    assert _messages(v.iter_errors({"ports": [{"containerPort": 2 ** 31}]}))
    dup = _messages(v.iter_errors({"ports": [{"containerPort": 80}, {"containerPort": 80, "protocol": "TCP"}]}))
    assert dup and dup[0].startswith("$.ports[1]: duplicate entry")


def _load(rel: str, kind: str) -> dict:
    (doc,) = [d for p, _, d in DOCUMENTS if _rel(p) == rel and isinstance(d, dict) and _label(d).startswith(kind)]
    return copy.deepcopy(doc)


def _rename(obj: dict, old: str, new: str) -> None:
    obj[new] = obj.pop(old)


def _mutations():
    def rayservice_head(doc):
        _rename(doc["spec"]["rayClusterConfig"]["headGroupSpec"], "rayStartParams", "rayStartParamz")

    def raycluster_container(doc):
        doc["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "Always"

    def raycluster_duplicate_port(doc):
        ports = doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]
        ports.append({"containerPort": ports[0]["containerPort"], "name": "again"})

    def raycronjob_spec(doc):
        _rename(doc["spec"]["jobTemplate"], "shutdownAfterJobFinishes", "shutdownAfterJobFinished")

    def serve_config(doc):
        doc["spec"]["serveConfigV2"] = doc["spec"]["serveConfigV2"].replace("import_path:", "import_paht:")

    def serve_package(doc):
        doc["spec"]["serveConfigV2"] = doc["spec"]["serveConfigV2"].replace(
            "import_path: snappy_pipelines.", "import_path: pipelines.")  # the folder, not an installed package

    def cronjob(doc):
        _rename(doc["spec"], "concurrencyPolicy", "concurrencyPolicyy")

    def secret(doc):
        doc["stringdata"] = doc.pop("stringData")

    def launcher(doc):
        _rename(doc, "idle_timeout_minutes", "idle_timeout_minutez")

    def raycluster_mount(doc):
        doc["spec"]["workerGroupSpecs"][0]["template"]["spec"]["volumes"] = []

    def raycronjob_gpu(doc):
        del doc["spec"]["jobTemplate"]["rayClusterSpec"]["workerGroupSpecs"][1]["template"]["spec"][
            "containers"][0]["resources"]["limits"]["nvidia.com/gpu"]

    def rayservice_serve_port(doc):
        ports = doc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]
        ports[:] = [p for p in ports if p["name"] != "serve"]

    cases = [
        ("infra/k8s/rayservice.yaml", "RayService", rayservice_head, "rayClusterConfig.headGroupSpec.rayStartParamz"),
        ("infra/k8s/raycluster.yaml", "RayCluster", raycluster_container, "containers[0].imagePulPolicy"),
        ("infra/k8s/raycluster.yaml", "RayCluster", raycluster_duplicate_port, "duplicate entry (containerPort=6379"),
        ("infra/k8s/raycronjob-nightly.yaml", "RayCronJob", raycronjob_spec, "jobTemplate.shutdownAfterJobFinished"),
        ("infra/k8s/rayservice.yaml", "RayService", serve_config, "applications[0].import_paht"),
        ("infra/k8s/rayservice.yaml", "RayService", serve_package, "not in a package this project installs"),
        ("infra/k8s/cronjob-nightly.yaml", "CronJob", cronjob, "concurrencyPolicyy"),
        ("infra/k8s/secret-example.yaml", "Secret", secret, "stringdata"),
        ("infra/ray-cluster.yaml", "ray-cluster-launcher", launcher, "idle_timeout_minutez"),
        ("infra/k8s/raycluster.yaml", "RayCluster", raycluster_mount, "'shm' is not a volume of the pod"),
        ("infra/k8s/raycronjob-nightly.yaml", "RayCronJob", raycronjob_gpu, "extended resource nvidia.com/gpu"),
        ("infra/k8s/rayservice.yaml", "RayService", rayservice_serve_port, "no port named 'serve'"),
    ]
    return [pytest.param(*case, id=f"{case[1]}-{case[2].__name__}") for case in cases]


@pytest.mark.parametrize("rel,kind,mutate,expect", _mutations())
def test_misspelled_field_fails(rel, kind, mutate, expect, request):
    doc = _load(rel, kind)
    validator_for = request.getfixturevalue("kuberay") if kind.startswith("Ray") else None
    assert document_problems(copy.deepcopy(doc), validator_for) == []
    mutate(doc)
    problems = document_problems(doc, validator_for)
    assert any(expect in p for p in problems), problems


def test_launcher_config_passes_rays_own_checks():
    """`ray up` fills in the provider's defaults and validates again (ray-schema.json plus its own rules)."""
    # A private module, imported plainly: if a Ray release moves it, this fails and says so.
    from ray.autoscaler._private import util  # importing Ray starts nothing
    (doc,) = [d for p, _, d in DOCUMENTS if _rel(p) == "infra/ray-cluster.yaml"]
    util.validate_config(util.prepare_config(copy.deepcopy(doc)))


# ------------------------------------------------------------------------------- across files

def _strings(doc):
    return [v for _, v in _walk(doc) if isinstance(v, str)]


def test_secret_references_exist():
    secrets = {s["metadata"]["name"]: set(s.get("stringData") or {}) | set(s.get("data") or {})
               for s in _k8s("Secret")}
    refs = []
    for doc in _k8s():
        for path, node in _walk(doc):
            if path and path[-1] == "secretRef" and isinstance(node, dict):
                refs.append((_label(doc), _json_path(path), node.get("name"), None))
            if path and path[-1] == "secretKeyRef" and isinstance(node, dict):
                refs.append((_label(doc), _json_path(path), node.get("name"), node.get("key")))
    assert refs, "no manifest reads the S3 secret"
    for label, path, name, key in refs:
        assert name in secrets, f"{label} {path}: secret {name!r} is not defined in infra/k8s ({sorted(secrets)})"
        assert key is None or key in secrets[name], f"{label} {path}: secret {name!r} has no key {key!r}"


def test_head_service_addresses_name_a_cluster():
    owners = {d["metadata"]["name"] for d in _k8s("RayCluster") + _k8s("RayService")}
    for doc in _k8s():
        for s in _strings(doc):
            for name in re.findall(r"([a-z0-9][-a-z0-9]*)-head-svc", s):
                assert name in owners, f"{_label(doc)}: {name}-head-svc, but no RayCluster/RayService {name!r}"


def _ray_pin() -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [re.search(r"==([\w.]+)", d).group(1) for d in deps if re.match(r"ray(\[|=)", d)]
    return pin


def test_ray_version_matches_the_pin():
    pin = _ray_pin()
    versions = [(_label(d), v) for d in _k8s() for p, v in _walk(d) if p and p[-1] == "rayVersion"]
    assert versions
    for label, v in versions:
        assert v == pin, f"{label}: rayVersion {v!r}, pyproject pins ray=={pin}"


def test_images_are_the_ones_built_here():
    launcher = [d for p, _, d in DOCUMENTS if _rel(p) == "infra/ray-cluster.yaml"]
    for doc in _k8s():
        for path, c in _containers(doc):
            where = f"{_label(doc)} {_json_path(path)}"
            assert c.get("image") in IMAGES, f"{where}: image {c.get('image')!r} not in {sorted(IMAGES)}"
            gpus = ((c.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu")
            assert not gpus or c["image"].endswith(":gpu"), f"{where}: asks for a GPU but runs the CPU image"
            assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in {e.get("name") for e in c.get("env") or []}, (
                f"{where}: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER is a single-machine setting")
    for doc in launcher:
        images = [v for p, v in _walk(doc) if p and p[-1] in ("image", "head_image", "worker_image")]
        assert images and set(images) <= IMAGES, images


def test_query_service_reads_the_index_the_nightly_jobs_write():
    written = {m for d in _k8s() for s in _strings(d) for m in re.findall(r"--index\s+(\S+)", s)}
    served = {yaml.safe_load(d["spec"]["serveConfigV2"])["applications"][0]["args"]["index"]
              for d in _k8s("RayService")}
    assert len(written) == 1 and served == written, (written, served)


@pytest.mark.parametrize("dockerfile", sorted(p for p in INFRA.glob("Dockerfile*") if p.suffix != ".dockerignore"),
                         ids=lambda p: p.name)
def test_dockerfile_installs_the_project(dockerfile):
    text = dockerfile.read_text()
    pin = _ray_pin()
    py = re.search(r">=\s*3\.(\d+)", tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"])
    assert re.search(rf"rayproject/ray:{re.escape(pin)}-py3{py.group(1)}-(cpu|gpu)\b", text), (
        f"{dockerfile.name}: base image is not rayproject/ray:{pin}-py3{py.group(1)}-*")
    assert re.search(r"pip install [^\n]*-e \.", text), f"{dockerfile.name}: does not pip install the repository"
    install = text.index("pip install --no-cache-dir -e .")
    for f in ("pyproject.toml", "setup.py"):  # what `pip install -e .` reads, copied before it runs
        assert re.search(rf"^COPY\b[^\n]*\s{re.escape(f)}\s", text[:install], re.M), f"{dockerfile.name}: {f} not copied"
    for pkg in sorted(_project_packages()):
        folder = _package_dir(pkg)
        assert re.search(rf"^COPY\b.*\s{folder}\s+{folder}\s*$", text, re.M), f"{dockerfile.name}: does not COPY {folder}/"
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    assert ignore.is_file() and ".venv" in ignore.read_text().split(), f"{ignore.name}: must keep .venv out"


def test_serve_builder_exists():
    module, attr = SERVE_IMPORT
    top, *rest = module.split(".")
    source = REPO.joinpath(_package_dir(top), *rest).with_suffix(".py")
    if not source.is_file():
        pytest.skip(f"{_rel(source)} not written yet (the RayService imports {module}:{attr})")
    tree = ast.parse(source.read_text())
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    defined |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    assert attr in defined, f"{_rel(source)} defines no {attr}"


def test_rayservice_args_cast_to_the_serve_config_field_types():
    """Every arg a RayService passes to the builder becomes its ServeConfig field's type, as the YAML
    gives it and as strings (``serve run ... key=value``); the builder once raised TypeError on any string."""
    import typing

    from pipelines import serve as serve_module
    hints = typing.get_type_hints(serve_module.ServeConfig)
    apps = [a for d in _k8s("RayService") for a in yaml.safe_load(d["spec"]["serveConfigV2"])["applications"]
            if _split_import_path(a["import_path"]) == SERVE_IMPORT]
    assert apps
    for app in apps:
        args = app["args"]
        assert args and set(args) <= set(hints), sorted(set(args) - set(hints))
        config = serve_module.config_from_args(args)
        for key in args:
            value = getattr(config, key)
            assert isinstance(value, hints[key]) and not (isinstance(value, bool) and hints[key] is not bool), (
                key, value, hints[key])
        assert serve_module.config_from_args({k: str(v) for k, v in args.items()}) == config
