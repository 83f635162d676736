#!/usr/bin/env python3
"""A small Kubernetes API server emulator for the controller tests (Python standard library only).

No real kube-apiserver can be obtained on the development and CI machines, so the controller tests
talk to this process instead. It implements the API semantics the operator, kube-rs and kubectl rely
on, and nothing else:

- discovery (/api, /apis, /version) for built-in kinds and for every CRD POSTed to it;
- objects get uid, resourceVersion, creationTimestamp and generation; generation moves only when
  the spec (anything outside metadata and status) changes; a write that changes nothing is a no-op
  (no new resourceVersion, no watch event);
- create (409 if it exists, generateName), get, list with label and field selectors, replace with
  optimistic concurrency (409 on a stale resourceVersion), merge / strategic-merge / JSON patch,
  server-side apply (creates a missing object; applying `/status` replaces the status, the single
  field manager's semantics), delete with finalizers, deletecollection;
- the status subresource is separate from the main resource: writes to one never change the other;
- watch from a resourceVersion, with JSON content type, bookmarks and 410 Gone for versions older
  than the kept history;
- garbage collection of dependents through ownerReferences (background, immediately);
- custom resources: the CRD's openAPIV3Schema is enforced (types, enums, ranges, patterns, required
  fields) and its defaults applied; unknown fields are pruned, or rejected under
  fieldValidation=Strict. CEL rules are NOT evaluated (the operator evaluates them client-side).
- `kubectl get` tables with the CRD's printer columns.

Not modelled: RBAC, admission, field ownership and conflicts of server-side apply, the Job and
garbage-collector controllers beyond the cascade above (tests drive Job and Pod status themselves).

Usage: kube_emulator.py [--port 0] [--ready-file PATH]; prints "listening on http://127.0.0.1:PORT".
GET /_emulator/stats returns the count of write requests by resource.
"""

import argparse
import copy
import datetime
import http.server
import json
import random
import re
import string
import sys
import threading
import time
import uuid
from urllib.parse import parse_qs, urlsplit

HISTORY_LIMIT = 100_000
BOOKMARK_SECONDS = 5.0


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    def __init__(self, code, reason, message):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def body(self):
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}


class Resource:
    def __init__(self, group, version, plural, kind, namespaced, status=False, short=(), categories=(),
                 schema=None, columns=None, singular=None):
        self.group, self.version, self.plural, self.kind = group, version, plural, kind
        self.namespaced, self.status = namespaced, status
        self.short, self.categories = list(short), list(categories)
        self.schema, self.columns = schema, columns or []
        self.singular = singular or kind.lower()

    @property
    def api_version(self):
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self):
        return (self.group, self.version, self.plural)

    def discovery(self):
        verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        out = [{"name": self.plural, "singularName": self.singular, "namespaced": self.namespaced,
                "kind": self.kind, "verbs": verbs, "shortNames": self.short, "categories": self.categories}]
        if self.status:
            out.append({"name": f"{self.plural}/status", "singularName": "", "namespaced": self.namespaced,
                        "kind": self.kind, "verbs": ["get", "patch", "update"]})
        return out


BUILTINS = [
    Resource("", "v1", "namespaces", "Namespace", False, status=True, short=["ns"]),
    Resource("", "v1", "pods", "Pod", True, status=True, short=["po"]),
    Resource("", "v1", "configmaps", "ConfigMap", True, short=["cm"]),
    Resource("", "v1", "secrets", "Secret", True),
    Resource("", "v1", "serviceaccounts", "ServiceAccount", True, short=["sa"]),
    Resource("", "v1", "events", "Event", True, short=["ev"]),
    Resource("batch", "v1", "jobs", "Job", True, status=True),
    Resource("coordination.k8s.io", "v1", "leases", "Lease", True),
    Resource("events.k8s.io", "v1", "events", "Event", True, short=["ev"]),
    Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False,
             status=True, short=["crd", "crds"]),
]


# ---------------------------------------------------------------- schema: defaults, pruning, validation

def apply_defaults(schema, value):
    if not isinstance(schema, dict) or not isinstance(value, dict):
        if isinstance(schema, dict) and isinstance(value, list) and isinstance(schema.get("items"), dict):
            for item in value:
                apply_defaults(schema["items"], item)
        return
    for name, sub in (schema.get("properties") or {}).items():
        if name not in value and "default" in sub:
            value[name] = copy.deepcopy(sub["default"])
        if name in value:
            apply_defaults(sub, value[name])
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for item in value.values():
            apply_defaults(extra, item)


TYPES = {"object": dict, "array": list, "string": str, "boolean": bool}


def validate(schema, value, path, errors, strict, root=False):
    if not isinstance(schema, dict):
        return
    if value is None:
        if not schema.get("nullable") and not root:
            errors.append(f"{path}: must not be null")
        return
    if schema.get("x-kubernetes-int-or-string"):
        if not isinstance(value, (int, str)) or isinstance(value, bool):
            errors.append(f"{path}: must be an integer or a string")
        return
    kind = schema.get("type")
    if kind == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            errors.append(f"{path}: must be an integer, got {json.dumps(value)}")
            return
    elif kind == "number":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            errors.append(f"{path}: must be a number, got {json.dumps(value)}")
            return
    elif kind in TYPES and not isinstance(value, TYPES[kind]):
        errors.append(f"{path}: must be of type {kind}, got {json.dumps(value)}")
        return
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(json.dumps(v) for v in schema["enum"])
        errors.append(f"{path}: unsupported value {json.dumps(value)}: supported values: {allowed}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: must be greater than or equal to {schema['minimum']:g}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: must be less than or equal to {schema['maximum']:g}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{path}: should be at least {schema['minLength']} chars long")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: may not be longer than {schema['maxLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: should match '{schema['pattern']}'")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path}: should have at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: must have at most {schema['maxItems']} items")
        if schema.get("x-kubernetes-list-type") == "set" and len({json.dumps(v, sort_keys=True) for v in value}) != len(value):
            errors.append(f"{path}: duplicate entries in a set")
        for i, item in enumerate(value):
            validate(schema.get("items"), item, f"{path}[{i}]", errors, strict)
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{path}.{name}: Required value")
        for name in list(value.keys()):
            if root and name in ("apiVersion", "kind", "metadata"):
                continue
            if props is not None and name in props:
                validate(props[name], value[name], f"{path}.{name}", errors, strict)
            elif isinstance(extra, dict):
                validate(extra, value[name], f"{path}.{name}", errors, strict)
            elif props is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
                if strict:
                    errors.append(f"{path}.{name}: unknown field")
                else:
                    del value[name]


# ---------------------------------------------------------------- selectors and JSONPath

def parse_label_selector(text):
    terms = []
    if not text:
        return terms
    for part in re.findall(r"[^,(]+(?:\([^)]*\))?", text):
        part = part.strip()
        if not part:
            continue
        m = re.match(r"^([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)$", part)
        if m:
            values = {v.strip() for v in m.group(3).split(",") if v.strip()}
            terms.append((m.group(1), m.group(2), values))
        elif "!=" in part:
            k, v = part.split("!=", 1)
            terms.append((k.strip(), "!=", v.strip()))
        elif "==" in part or "=" in part:
            k, v = part.split("==", 1) if "==" in part else part.split("=", 1)
            terms.append((k.strip(), "=", v.strip()))
        elif part.startswith("!"):
            terms.append((part[1:].strip(), "!exists", None))
        else:
            terms.append((part, "exists", None))
    return terms


def labels_match(terms, labels):
    labels = labels or {}
    for key, op, value in terms:
        have = labels.get(key)
        if op == "=" and have != value:
            return False
        if op == "!=" and have == value:
            return False
        if op == "in" and have not in value:
            return False
        if op == "notin" and have in value:
            return False
        if op == "exists" and key not in labels:
            return False
        if op == "!exists" and key in labels:
            return False
    return True


def fields_match(text, obj):
    for part in filter(None, (text or "").split(",")):
        negate = "!=" in part
        key, value = re.split(r"!=|==|=", part, maxsplit=1)
        cur = obj
        for seg in key.strip().split("."):
            cur = cur.get(seg) if isinstance(cur, dict) else None
        if (str(cur) if cur is not None else "") == value.strip():
            if negate:
                return False
        elif not negate:
            return False
    return True


def jsonpath(obj, path):
    """The subset of JSONPath printer columns use: .a.b, [n], and [?(@.k=="v")]."""
    current = [obj]
    for token in re.findall(r"\.([A-Za-z0-9_\-]+)|\[\?\(@\.([A-Za-z0-9_]+)==\"([^\"]*)\"\)\]|\[(\d+)\]", path):
        name, fkey, fval, index = token
        nxt = []
        for item in current:
            if name and isinstance(item, dict) and name in item:
                nxt.append(item[name])
            elif fkey and isinstance(item, list):
                nxt.extend(e for e in item if isinstance(e, dict) and str(e.get(fkey)) == fval)
            elif index and isinstance(item, list) and int(index) < len(item):
                nxt.append(item[int(index)])
        current = nxt
    return current[0] if current else None


def human_age(timestamp):
    try:
        then = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    except (TypeError, ValueError):
        return "<unknown>"
    seconds = int((datetime.datetime.now(datetime.timezone.utc) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * 2:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


# ---------------------------------------------------------------- patches

def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target, operations):
    doc = copy.deepcopy(target)
    for op in operations:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1] if parts else None
        kind = op["op"]
        if kind == "test":
            cur = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if cur != op.get("value"):
                raise ApiError(422, "Invalid", f"json patch test failed at {op['path']}")
        elif kind in ("add", "replace"):
            if isinstance(parent, list):
                if last == "-":
                    parent.append(op["value"])
                elif kind == "add":
                    parent.insert(int(last), op["value"])
                else:
                    parent[int(last)] = op["value"]
            else:
                parent[last] = op["value"]
        elif kind == "remove":
            if isinstance(parent, list):
                parent.pop(int(last))
            else:
                parent.pop(last, None)
        else:
            raise ApiError(422, "Invalid", f"unsupported json patch op {kind}")
    return doc


# ---------------------------------------------------------------- the store

class Store:
    def __init__(self):
        self.lock = threading.Condition(threading.RLock())
        self.resources = {r.key: r for r in BUILTINS}
        self.objects = {}          # resource key -> {(namespace, name): obj}
        self.history = []          # (rv, resource key, type, obj)
        self.history_start = 1     # oldest rv still in history
        self.rv = 100
        self.writes = {}

    # discovery -------------------------------------------------------
    def find(self, group, version, plural):
        res = self.resources.get((group, version, plural))
        if res is None:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({group}/{version}, {plural})")
        return res

    def register_crd(self, crd):
        spec = crd.get("spec", {})
        names = spec.get("names", {})
        for version in spec.get("versions", []):
            if not version.get("served", True):
                continue
            res = Resource(
                spec["group"], version["name"], names["plural"], names["kind"], spec.get("scope") == "Namespaced",
                status="status" in (version.get("subresources") or {}), short=names.get("shortNames", []),
                categories=names.get("categories", []),
                schema=(version.get("schema") or {}).get("openAPIV3Schema"),
                columns=version.get("additionalPrinterColumns", []), singular=names.get("singular"))
            self.resources[res.key] = res

    # events ----------------------------------------------------------
    def _emit(self, res, kind, obj):
        self.history.append((int(obj["metadata"]["resourceVersion"]), res.key, kind, copy.deepcopy(obj)))
        if len(self.history) > HISTORY_LIMIT:
            drop = len(self.history) - HISTORY_LIMIT
            self.history_start = self.history[drop][0]
            del self.history[:drop]
        self.lock.notify_all()

    def _bump(self, obj):
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    def count_write(self, res):
        self.writes[res.plural] = self.writes.get(res.plural, 0) + 1

    # reads -----------------------------------------------------------
    def get(self, res, ns, name):
        obj = self.objects.get(res.key, {}).get((ns, name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{res.plural}{"." + res.group if res.group else ""} "{name}" not found')
        return obj

    def list(self, res, ns, label_selector, field_selector):
        terms = parse_label_selector(label_selector)
        items = [o for (ons, _), o in sorted(self.objects.get(res.key, {}).items())
                 if (ns is None or ons == ns)
                 and labels_match(terms, o["metadata"].get("labels"))
                 and fields_match(field_selector, o)]
        return items

    # writes ----------------------------------------------------------
    def _prepare(self, res, obj, strict):
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        if res.schema:
            apply_defaults(res.schema, obj)
            errors = []
            validate(res.schema, obj, "", errors, strict, root=True)
            if errors:
                name = obj.get("metadata", {}).get("name", "")
                detail = "; ".join(e.lstrip(".") for e in errors)
                raise ApiError(422, "Invalid", f'{res.kind} "{name}" is invalid: {detail}')

    def create(self, res, ns, obj, strict=False, dry_run=False):
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
            else:
                raise ApiError(422, "Invalid", f"{res.kind}: metadata.name: Required value")
        if res.namespaced:
            if meta.get("namespace") and meta["namespace"] != ns:
                raise ApiError(400, "BadRequest", "the namespace of the object does not match the namespace of the request")
            meta["namespace"] = ns
        key = (ns if res.namespaced else None, meta["name"])
        if key in self.objects.get(res.key, {}):
            raise ApiError(409, "AlreadyExists", f'{res.plural}{"." + res.group if res.group else ""} "{meta["name"]}" already exists')
        if res.status and res.group not in ("", "apiextensions.k8s.io"):
            obj.pop("status", None)
        self._prepare(res, obj, strict)
        if dry_run:
            return obj
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        meta.pop("resourceVersion", None)
        self._bump(obj)
        self.objects.setdefault(res.key, {})[key] = obj
        if res.plural == "customresourcedefinitions":
            self.register_crd(obj)
        self._emit(res, "ADDED", obj)
        return obj

    def update(self, res, ns, name, new, subresource, expected_rv=None, strict=False):
        key = (ns if res.namespaced else None, name)
        old = self.get(res, key[0], name)
        if expected_rv and expected_rv != old["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict",
                           f'Operation cannot be fulfilled on {res.plural} "{name}": the object has been modified; '
                           "please apply your changes to the latest version and try again")
        if subresource == "status":
            merged = copy.deepcopy(old)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
        else:
            merged = copy.deepcopy(new)
            merged.setdefault("metadata", {})
            for field in ("uid", "creationTimestamp", "namespace", "name", "generation", "deletionTimestamp"):
                if field in old["metadata"]:
                    merged["metadata"][field] = old["metadata"][field]
                else:
                    merged["metadata"].pop(field, None)
            if res.status:
                if "status" in old:
                    merged["status"] = old["status"]
                else:
                    merged.pop("status", None)
        merged["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        self._prepare(res, merged, strict)
        if merged == old:
            return old
        spec_old = {k: v for k, v in old.items() if k not in ("metadata", "status")}
        spec_new = {k: v for k, v in merged.items() if k not in ("metadata", "status")}
        if spec_old != spec_new:
            merged["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        self._bump(merged)
        if merged["metadata"].get("deletionTimestamp") and not merged["metadata"].get("finalizers"):
            self._remove(res, key, merged)
            return merged
        self.objects[res.key][key] = merged
        if res.plural == "customresourcedefinitions":
            self.register_crd(merged)
        self._emit(res, "MODIFIED", merged)
        return merged

    def _remove(self, res, key, obj):
        del self.objects[res.key][key]
        self._emit(res, "DELETED", obj)
        uid = obj["metadata"].get("uid")
        # Garbage collection: dependents that name the removed object as an owner.
        for other_key, objects in list(self.objects.items()):
            other = self.resources.get(other_key)
            for okey, dep in list(objects.items()):
                refs = dep["metadata"].get("ownerReferences") or []
                if any(r.get("uid") == uid for r in refs) and okey in objects:
                    self.delete(other, okey[0], okey[1], None)

    def delete(self, res, ns, name, propagation, expected_rv=None):
        key = (ns if res.namespaced else None, name)
        obj = self.get(res, key[0], name)
        if expected_rv and expected_rv != obj["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.plural} "{name}": precondition failed')
        if propagation == "Orphan":
            uid = obj["metadata"]["uid"]
            for other_key, objects in self.objects.items():
                for dep in objects.values():
                    refs = dep["metadata"].get("ownerReferences") or []
                    if any(r.get("uid") == uid for r in refs):
                        dep["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                        self._bump(dep)
                        self._emit(self.resources[other_key], "MODIFIED", dep)
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                obj = copy.deepcopy(obj)
                obj["metadata"]["deletionTimestamp"] = now_rfc3339()
                self._bump(obj)
                self.objects[res.key][key] = obj
                self._emit(res, "MODIFIED", obj)
            return obj
        obj = copy.deepcopy(obj)
        self._bump(obj)
        self._remove(res, key, obj)
        return obj


STORE = Store()


# ---------------------------------------------------------------- HTTP

PATH = re.compile(r"^/(?:api/(?P<cv>v1)|apis/(?P<g>[^/]+)/(?P<v>[^/]+))"
                  r"(?:/namespaces/(?P<ns>[^/]+)(?=/[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kube-emulator/1"

    def log_message(self, fmt, *args):  # quiet: the tests read the operator's logs, not these
        pass

    # plumbing ----------------------------------------------------------
    def send_json(self, code, body, content_type="application/json"):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(415, "UnsupportedMediaType", "the emulator accepts JSON request bodies only")

    def handle_any(self, method):
        if method == "GET" and int(self.headers.get("Content-Length") or 0):
            self.rfile.read(int(self.headers["Content-Length"]))
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if method == "GET" and url.path in ("/api", "/apis", "/version", "/_emulator/stats") or \
                    method == "GET" and re.match(r"^/(api/v1|apis/[^/]+(/[^/]+)?)/?$", url.path):
                return self.send_json(200, self.discovery(url.path.rstrip("/")))
            if method == "GET" and url.path.startswith("/openapi/v3"):
                return self.send_json(200, self.openapi_v3(url.path[len("/openapi/v3"):].strip("/")))
            if url.path.startswith("/openapi"):
                raise ApiError(404, "NotFound", "the emulator serves OpenAPI v3 only")
            m = PATH.match(url.path)
            if not m:
                raise ApiError(404, "NotFound", f"the server could not find the requested resource {url.path}")
            group = m.group("g") or ""
            version = m.group("cv") or m.group("v")
            ns, plural, name, sub = m.group("ns"), m.group("plural"), m.group("name"), m.group("sub")
            with STORE.lock:
                res = STORE.find(group, version, plural)
            if res.namespaced is False:
                ns = None
            if sub not in (None, "status"):
                raise ApiError(404, "NotFound", f"subresource {sub} is not served")
            if sub == "status" and not res.status:
                raise ApiError(404, "NotFound", f"{res.plural} has no status subresource")
            return self.dispatch_resource(method, res, ns, name, sub, query)
        except ApiError as e:
            return self.send_json(e.code, e.body())
        except (BrokenPipeError, ConnectionResetError):
            return None
        except Exception as e:  # a bug in the emulator must be visible, not a hang
            return self.send_json(500, ApiError(500, "InternalError", f"emulator error: {e!r}").body())

    def discovery(self, path):
        with STORE.lock:
            resources = list(STORE.resources.values())
            if path == "/_emulator/stats":
                return {"writes": dict(STORE.writes), "resourceVersion": STORE.rv}
        if path == "/version":
            return {"major": "1", "minor": "35", "gitVersion": "v1.35.0-kube-emulator", "platform": "linux/amd64"}
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
        groups = {}
        for r in resources:
            if r.group:
                groups.setdefault(r.group, [])
                if r.version not in groups[r.group]:
                    groups[r.group].append(r.version)

        def group_body(name):
            versions = [{"groupVersion": f"{name}/{v}", "version": v} for v in groups[name]]
            return {"name": name, "versions": versions, "preferredVersion": versions[0]}
        if path == "/apis":
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group_body(g) for g in sorted(groups)]}
        parts = path.strip("/").split("/")
        if parts[0] == "api":
            gv, group, version = "v1", "", "v1"
        elif len(parts) == 2:
            if parts[1] not in groups:
                raise ApiError(404, "NotFound", f"group {parts[1]} not found")
            return dict(group_body(parts[1]), kind="APIGroup", apiVersion="v1")
        else:
            group, version = parts[1], parts[2]
            gv = f"{group}/{version}"
        listed = [d for r in resources if r.group == group and r.version == version for d in r.discovery()]
        if not listed:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource {gv}")
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": listed}

    def openapi_v3(self, group_version):
        """Just enough OpenAPI v3 for kubectl to see that the server validates fields itself
        (`fieldValidation`), so that it sends fieldValidation=Strict instead of validating locally."""
        with STORE.lock:
            resources = list(STORE.resources.values())
        def gv_path(r):
            return f"api/{r.version}" if not r.group else f"apis/{r.group}/{r.version}"
        if not group_version:
            paths = {gv_path(r): {"serverRelativeURL": f"/openapi/v3/{gv_path(r)}?hash={STORE.rv}"} for r in resources}
            return {"paths": paths}
        chosen = [r for r in resources if gv_path(r) == group_version]
        if not chosen:
            raise ApiError(404, "NotFound", f"no OpenAPI document for {group_version}")
        param = [{"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}}]
        paths = {}
        for r in chosen:
            gvk = {"group": r.group, "version": r.version, "kind": r.kind}
            scope = "/namespaces/{namespace}" if r.namespaced else ""
            paths[f"/{group_version}{scope}/{r.plural}/{{name}}"] = {
                "patch": {"x-kubernetes-group-version-kind": gvk, "parameters": param, "responses": {}},
                "put": {"x-kubernetes-group-version-kind": gvk, "parameters": param, "responses": {}},
            }
            paths[f"/{group_version}{scope}/{r.plural}"] = {
                "post": {"x-kubernetes-group-version-kind": gvk, "parameters": param, "responses": {}},
            }
        return {"openapi": "3.0.0", "info": {"title": "kube-emulator", "version": "v1.35.0"}, "paths": paths,
                "components": {"schemas": {}}}

    def dispatch_resource(self, method, res, ns, name, sub, query):
        strict = query.get("fieldValidation") == "Strict"
        if method == "GET" and name is None:
            if query.get("watch") in ("true", "1"):
                return self.watch(res, ns, query)
            with STORE.lock:
                items = copy.deepcopy(STORE.list(res, ns, query.get("labelSelector"), query.get("fieldSelector")))
                rv = str(STORE.rv)
            if "as=Table" in (self.headers.get("Accept") or ""):
                return self.send_json(200, self.table(res, items, rv))
            return self.send_json(200, {"kind": f"{res.kind}List", "apiVersion": res.api_version,
                                        "metadata": {"resourceVersion": rv}, "items": items})
        if method == "GET":
            with STORE.lock:
                obj = copy.deepcopy(STORE.get(res, ns, name))
            if "as=Table" in (self.headers.get("Accept") or ""):
                return self.send_json(200, self.table(res, [obj], obj["metadata"]["resourceVersion"]))
            return self.send_json(200, obj)
        body = self.read_body() if method in ("POST", "PUT", "PATCH", "DELETE") else None
        if method in ("POST", "PUT", "PATCH", "DELETE") and not query.get("dryRun"):
            with STORE.lock:
                STORE.count_write(res)
        if method == "POST" and name is None:
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the request body must be an object")
            with STORE.lock:
                obj = STORE.create(res, ns, body, strict, dry_run=bool(query.get("dryRun")))
                return self.send_json(201, copy.deepcopy(obj))
        if method == "PUT" and name:
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the request body must be an object")
            expected = (body.get("metadata") or {}).get("resourceVersion")
            with STORE.lock:
                obj = STORE.update(res, ns, name, body, sub, expected, strict)
                return self.send_json(200, copy.deepcopy(obj))
        if method == "PATCH" and name:
            return self.patch(res, ns, name, sub, body, query, strict)
        if method == "DELETE" and name:
            options = body if isinstance(body, dict) else {}
            propagation = options.get("propagationPolicy") or query.get("propagationPolicy")
            expected = (options.get("preconditions") or {}).get("resourceVersion")
            with STORE.lock:
                obj = STORE.delete(res, ns, name, propagation, expected)
                return self.send_json(200, copy.deepcopy(obj))
        if method == "DELETE" and name is None:
            with STORE.lock:
                victims = STORE.list(res, ns, query.get("labelSelector"), query.get("fieldSelector"))
                deleted = [STORE.delete(res, v["metadata"].get("namespace"), v["metadata"]["name"], None) for v in victims]
                return self.send_json(200, {"kind": f"{res.kind}List", "apiVersion": res.api_version,
                                            "metadata": {}, "items": copy.deepcopy(deleted)})
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")

    def patch(self, res, ns, name, sub, body, query, strict):
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        with STORE.lock:
            try:
                current = STORE.get(res, ns, name)
            except ApiError:
                if kind != "application/apply-patch+yaml":
                    raise
                if not isinstance(body, dict):
                    raise ApiError(400, "BadRequest", "the apply body must be an object")
                body.setdefault("metadata", {})["name"] = name
                return self.send_json(201, copy.deepcopy(STORE.create(res, ns, body, strict)))
            if kind == "application/json-patch+json":
                patched = json_patch(current, body or [])
            elif kind == "application/apply-patch+yaml" and sub == "status":
                # One field manager owns the whole status: applying it replaces it.
                patched = copy.deepcopy(current)
                patched["status"] = (body or {}).get("status", {})
            elif kind in ("application/merge-patch+json", "application/strategic-merge-patch+json",
                          "application/apply-patch+yaml"):
                patched = merge_patch(current, body or {})
            else:
                raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {kind!r}")
            expected = (body or {}).get("metadata", {}).get("resourceVersion") if isinstance(body, dict) else None
            patched.setdefault("metadata", {})["resourceVersion"] = current["metadata"]["resourceVersion"]
            obj = STORE.update(res, ns, name, patched, sub, expected, strict)
            return self.send_json(200, copy.deepcopy(obj))

    def table(self, res, items, rv):
        columns = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
        paths = [None]
        for c in res.columns:
            columns.append({"name": c["name"], "type": c["type"], "format": c.get("format", ""),
                            "description": c.get("description", ""), "priority": c.get("priority", 0)})
            paths.append(c)
        if not res.columns:
            columns.append({"name": "Age", "type": "date", "format": "", "description": "Age", "priority": 0})
            paths.append({"jsonPath": ".metadata.creationTimestamp", "type": "date"})
        rows = []
        for obj in items:
            cells = []
            for column in paths:
                if column is None:
                    cells.append(obj["metadata"]["name"])
                    continue
                value = jsonpath(obj, column["jsonPath"])
                if column["type"] == "date" and value is not None:
                    value = human_age(value)
                cells.append(value if value is not None else None)
            rows.append({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                                    "metadata": obj["metadata"]}})
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
                "columnDefinitions": columns, "rows": rows}

    def watch(self, res, ns, query):
        terms = parse_label_selector(query.get("labelSelector"))
        field_selector = query.get("fieldSelector")
        deadline = time.monotonic() + min(float(query.get("timeoutSeconds") or 1800), 1800)
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def send(event):
            data = json.dumps(event).encode() + b"\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def visible(obj):
            meta = obj["metadata"]
            return (ns is None or meta.get("namespace") == ns) and labels_match(terms, meta.get("labels")) \
                and fields_match(field_selector, obj)

        start = query.get("resourceVersion") or "0"
        pending = []
        with STORE.lock:
            if start == "0":
                since = STORE.rv
                pending = [{"type": "ADDED", "object": copy.deepcopy(o)}
                           for o in STORE.list(res, ns, query.get("labelSelector"), field_selector)]
            else:
                since = int(start)
                if since < STORE.history_start - 1:
                    pending = [{"type": "ERROR", "object": ApiError(410, "Expired", f"too old resource version: {since}").body()}]
                    since = None
        try:
            for event in pending:
                send(event)
            last_bookmark = time.monotonic()
            while since is not None and time.monotonic() < deadline:
                with STORE.lock:
                    events = self._after(since)
                    if not events:
                        STORE.lock.wait(timeout=1.0)
                        events = self._after(since)
                    # Every event up to the current resourceVersion is in `events` now.
                    since = STORE.rv
                for _, key, kind, obj in events:
                    if key == res.key and visible(obj):
                        send({"type": kind, "object": obj})
                if bookmarks and time.monotonic() - last_bookmark > BOOKMARK_SECONDS:
                    send({"type": "BOOKMARK", "object": {"kind": res.kind, "apiVersion": res.api_version,
                                                         "metadata": {"resourceVersion": str(since)}}})
                    last_bookmark = time.monotonic()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        self.close_connection = True

    @staticmethod
    def _after(since):
        history = STORE.history
        lo, hi = 0, len(history)
        while lo < hi:  # binary search: history is ordered by resourceVersion
            mid = (lo + hi) // 2
            if history[mid][0] <= since:
                lo = mid + 1
            else:
                hi = mid
        return history[lo:]

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_PATCH(self):
        self.handle_any("PATCH")

    def do_DELETE(self):
        self.handle_any("DELETE")


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", help="write the URL here once listening")
    args = parser.parse_args()
    with STORE.lock:
        STORE.create(STORE.find("", "v1", "namespaces"), None, {"metadata": {"name": "default"}})
    server = Server((args.host, args.port), Handler)
    url = f"http://{args.host}:{server.server_address[1]}"
    if args.ready_file:
        with open(args.ready_file + ".tmp", "w") as f:
            f.write(url)
        import os
        os.replace(args.ready_file + ".tmp", args.ready_file)
    print(f"listening on {url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
