"""A stand-in for a Kubernetes API server, for what the tests cannot run a real one for.

Discovery, for `kubectl apply --dry-run=client` with no cluster: answers /api, /apis and each
group version's resource list in the API's own JSON shapes (as a v1.33 server answers them,
trimmed to the kinds weft's manifests use), and 404 (a `Status`) for every object, so that
kubectl maps each document to its resource, checks it, and reports it "created (dry run)".
Nothing is stored.

TokenReviews (`POST /apis/authentication.k8s.io/v1/tokenreviews`), as the API server answers
them: the tokens of TOKENS_JSON (`{"TOKEN": "system:serviceaccount:NS:SA" or null}`) are
authenticated as that user for the audiences asked, unknown ones are not.

Objects given with --object (JSON files of Namespaces, ConfigMaps and
MutatingWebhookConfigurations, at their API paths): GET answers one with its resourceVersion
(and the Namespaces are listed with those of --cluster), PUT replaces one when its resourceVersion
is the current one (else 409 Conflict, as the API server does), POST to a collection creates
one (409 AlreadyExists when it is there).

Objects of the --cluster groups (the custom resources) are also read, replaced (PUT, refused
with 409 Conflict for a stale resourceVersion), created (POST) and deleted (DELETE) one by one
at their paths, each change an event of the watches.

Every TokenReview, PUT, POST, DELETE and PATCH is appended to LOG (one JSON line each). POST to a
namespaced collection creates the object (409 AlreadyExists when it is there); PATCH of a
--cluster object's `/status` merges the patch into its status (a JSON merge patch, logged with
its fieldManager) and is a MODIFIED event.

List and watch, as the API server serves them to informers, over the objects of --cluster (a
JSON list of objects, as `kubectl get -o json` prints them, in their API shapes) and of
--object: `GET COLLECTION` (cluster-wide, e.g. /api/v1/services) answers a `KINDList` with the
current resourceVersion; `GET COLLECTION?watch=true&resourceVersion=N` streams (chunked, one
JSON `{"type", "object"}` per line) the events after N, then every later one, until its
timeoutSeconds. Every object change bumps the one resourceVersion counter, as etcd's revision.
The test drives the changes:

    POST /_test/events    {"events": [{"type": "ADDED"|"MODIFIED"|"DELETED", "object": {...}}],
                           "silent": false}   apply them; silent: change the objects without
                                              recording events (only a relist sees them)
    POST /_test/bookmark  a BOOKMARK at a new resourceVersion on every collection
    POST /_test/expire    every resourceVersion so far is too old: open watches get an ERROR
                          event with a 410 Status (reason Expired), and so does a watch from one
    POST /_test/drop      every open watch connection is cut without ending its stream
    GET  /_test/requests  every list and watch request so far: {"collection", "watch",
                          "resourceVersion"}

    python3 apiserver.py PORT_FILE [--tokens TOKENS_JSON] [--log LOG] [--object FILE]...
                                   [--cluster FILE] [--port PORT]
"""

import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

ALL = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def res(name, kind, namespaced, short=None, verbs=ALL):
    r = {"name": name, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind, "verbs": verbs}
    if short:
        r["shortNames"] = short
    return r


GROUPS = {
    ("", "v1"): [
        res("namespaces", "Namespace", False, ["ns"]),
        res("services", "Service", True, ["svc"]),
        res("serviceaccounts", "ServiceAccount", True, ["sa"]),
        res("configmaps", "ConfigMap", True, ["cm"]),
        res("secrets", "Secret", True),
        res("pods", "Pod", True, ["po"]),
        res("endpoints", "Endpoints", True, ["ep"]),
        res("replicationcontrollers", "ReplicationController", True, ["rc"]),
    ],
    ("apps", "v1"): [
        res("deployments", "Deployment", True, ["deploy"]),
        res("statefulsets", "StatefulSet", True, ["sts"]),
        res("daemonsets", "DaemonSet", True, ["ds"]),
        res("replicasets", "ReplicaSet", True, ["rs"]),
    ],
    ("batch", "v1"): [res("jobs", "Job", True), res("cronjobs", "CronJob", True, ["cj"])],
    ("rbac.authorization.k8s.io", "v1"): [
        res("clusterroles", "ClusterRole", False),
        res("clusterrolebindings", "ClusterRoleBinding", False),
        res("roles", "Role", True),
        res("rolebindings", "RoleBinding", True),
    ],
    ("admissionregistration.k8s.io", "v1"): [
        res("mutatingwebhookconfigurations", "MutatingWebhookConfiguration", False),
        res("validatingwebhookconfigurations", "ValidatingWebhookConfiguration", False),
    ],
    ("coordination.k8s.io", "v1"): [res("leases", "Lease", True)],
    ("policy", "v1"): [res("poddisruptionbudgets", "PodDisruptionBudget", True, ["pdb"])],
    ("discovery.k8s.io", "v1"): [res("endpointslices", "EndpointSlice", True)],
    ("apiextensions.k8s.io", "v1"): [
        res("customresourcedefinitions", "CustomResourceDefinition", False, ["crd", "crds"]),
    ],
}

# The custom resources of --cluster's kinds are served as their CRDs would be installed.
CLUSTER_GROUPS = {
    ("networking.istio.io", "v1"): [
        res("virtualservices", "VirtualService", True, ["vs"]),
        res("destinationrules", "DestinationRule", True, ["dr"]),
    ],
    ("gateway.networking.k8s.io", "v1"): [
        res("httproutes", "HTTPRoute", True),
        res("httproutes/status", "HTTPRoute", True, verbs=["get", "patch", "update"]),
    ],
    ("weft.dev", "v1alpha1"): [res("canaries", "Canary", True)],
}

CLUSTER_GROUP_NAMES = {g for (g, _) in CLUSTER_GROUPS}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def failure(self, code, reason, message):
        """A `Status` as the API server answers a failed request."""
        return self.send(code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": message, "reason": reason, "code": code})

    def send(self, code, doc):
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?")[0].rstrip("/")
        query = {k: v[0] for k, v in parse_qs(self.path.partition("?")[2]).items()}
        if path == "/_test/requests":
            with LOCK:
                return self.send(200, list(REQUESTS))
        if path in COLLECTIONS:
            return self.collection(path, query)
        found = cluster_object(path)
        if found:
            with LOCK:
                obj = COLLECTIONS[found[0]].get(found[1])
            if obj is None:
                return self.failure(404, "NotFound", f"{path} not found")
            return self.send(200, obj)
        if path in OBJECTS:
            return self.send(200, OBJECTS[path])
        if path == "/api":
            return self.send(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.server.server_port}"}]})
        if path == "/apis":
            groups = []
            for (g, v) in GROUPS:
                if g:
                    gv = {"groupVersion": f"{g}/{v}", "version": v}
                    groups.append({"name": g, "versions": [gv], "preferredVersion": gv})
            return self.send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        for (g, v), resources in GROUPS.items():
            prefix = f"/apis/{g}/{v}" if g else f"/api/{v}"
            if path == prefix:
                return self.send(200, {"kind": "APIResourceList", "apiVersion": "v1",
                                       "groupVersion": f"{g}/{v}" if g else v, "resources": resources})
        return self.failure(404, "NotFound", f"{path} not found")

    def collection(self, path, query):
        watching = query.get("watch") in ("true", "1")
        with LOCK:
            REQUESTS.append({"collection": path, "watch": watching,
                             "resourceVersion": query.get("resourceVersion", "")})
            if not watching:
                kind = KINDS[path]
                items = []
                for obj in COLLECTIONS[path].values():
                    item = dict(obj)
                    item.pop("apiVersion", None)
                    item.pop("kind", None)
                    items.append(item)
                return self.send(200, {"kind": kind + "List", "apiVersion": API_VERSIONS[path],
                                       "metadata": {"resourceVersion": str(RV)}, "items": items})
        self.watch(path, int(query.get("resourceVersion") or 0), float(query.get("timeoutSeconds") or 290))

    def watch(self, path, since, timeout):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def chunk(event):
            data = (json.dumps(event) + "\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        deadline = time.monotonic() + timeout
        with LOCK:
            dropped, expired = DROPS, EXPIRES
            too_old = since < EXPIRED_BELOW
            seen = len(EVENTS)
            pending = [] if too_old else [e for (rv, p, e) in EVENTS if p == path and rv > since]
        try:
            while True:
                if too_old:
                    chunk({"type": "ERROR", "object": {
                        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": f"too old resource version: {since} ({EXPIRED_BELOW})",
                        "reason": "Expired", "code": 410}})
                    break
                for e in pending:
                    chunk(e)
                with LOCK:
                    while (len(EVENTS) == seen and DROPS == dropped and EXPIRES == expired
                           and time.monotonic() < deadline):
                        LOCK.wait(max(0.0, min(0.5, deadline - time.monotonic())))
                    if DROPS != dropped:
                        # Cut, as a connection through a failing load balancer is.
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    too_old = EXPIRES != expired
                    pending = [e for (rv, p, e) in EVENTS[seen:] if p == path]
                    seen = len(EVENTS)
                    if not too_old and not pending and time.monotonic() >= deadline:
                        break
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def test_control(self, path, body):
        global RV, EXPIRED_BELOW, DROPS, EXPIRES
        with LOCK:
            if path == "/_test/events":
                for e in body["events"]:
                    obj = e["object"]
                    RV += 1
                    obj.setdefault("metadata", {})["resourceVersion"] = str(RV)
                    collection = collection_of(obj)
                    key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
                    if e["type"] == "DELETED":
                        COLLECTIONS[collection].pop(key, None)
                    else:
                        COLLECTIONS[collection][key] = obj
                    if not body.get("silent"):
                        EVENTS.append((RV, collection, {"type": e["type"], "object": obj}))
            elif path == "/_test/bookmark":
                RV += 1
                for collection in COLLECTIONS:
                    EVENTS.append((RV, collection, {"type": "BOOKMARK", "object": {
                        "kind": KINDS[collection], "apiVersion": API_VERSIONS[collection],
                        "metadata": {"resourceVersion": str(RV),
                                     "annotations": {"k8s.io/initial-events-end": "true"}}}}))
            elif path == "/_test/expire":
                EXPIRED_BELOW = RV + 1
                EXPIRES += 1
            elif path == "/_test/drop":
                DROPS += 1
            else:
                return self.send(404, {"kind": "Status", "code": 404})
            LOCK.notify_all()
            return self.send(200, {"resourceVersion": str(RV)})

    def do_PATCH(self):
        """A JSON merge patch of a --cluster object's status subresource."""
        path = self.path.split("?")[0].rstrip("/")
        query = {k: v[0] for k, v in parse_qs(self.path.partition("?")[2]).items()}
        length = int(self.headers.get("Content-Length") or 0)
        patch = json.loads(self.rfile.read(length) or b"{}")
        parts = path.split("/")
        if len(parts) < 6 or parts[-1] != "status" or parts[-5] != "namespaces":
            return self.send(404, {"kind": "Status", "code": 404, "message": f"{path} not found"})
        ns, plural, name = parts[-4], parts[-3], parts[-2]
        collection = "/".join(parts[:-5]) + "/" + plural
        with LOCK:
            global RV
            obj = COLLECTIONS.get(collection, {}).get((ns, name))
            if obj is None:
                return self.send(404, {"kind": "Status", "code": 404, "message": f"{path} not found"})
            obj["status"] = merge(obj.get("status"), patch.get("status"))
            RV += 1
            obj["metadata"]["resourceVersion"] = str(RV)
            EVENTS.append((RV, collection, {"type": "MODIFIED", "object": obj}))
            log(json.dumps({"patch": path, "fieldManager": query.get("fieldManager"),
                            "status": patch.get("status")}))
            LOCK.notify_all()
            return self.send(200, obj)

    def do_DELETE(self):
        path = self.path.split("?")[0].rstrip("/")
        found = cluster_object(path)
        with LOCK:
            obj = found and COLLECTIONS[found[0]].get(found[1])
            if not obj:
                return self.failure(404, "NotFound", f"{path} not found")
            cluster_change("DELETED", found[0], obj)
            log(json.dumps({"delete": path}))
            return self.send(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})

    def do_PUT(self):
        path = self.path.split("?")[0].rstrip("/")
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        found = cluster_object(path)
        if found:
            with LOCK:
                current = COLLECTIONS[found[0]].get(found[1])
                if current is None:
                    return self.failure(404, "NotFound", f"{path} not found")
                if body.get("metadata", {}).get("resourceVersion") != current["metadata"]["resourceVersion"]:
                    return self.failure(409, "Conflict", "the object has been modified")
                body.setdefault("status", current.get("status"))
                cluster_change("MODIFIED", found[0], body)
                log(json.dumps({"put": path, "object": body}))
                return self.send(200, body)
        if path not in OBJECTS:
            return self.failure(404, "NotFound", f"{path} not found")
        current = OBJECTS[path]["metadata"]["resourceVersion"]
        if body.get("metadata", {}).get("resourceVersion") != current:
            return self.failure(409, "Conflict", "the object has been modified")
        body["metadata"]["resourceVersion"] = str(int(current) + 1)
        OBJECTS[path] = body
        log(json.dumps({"put": path, "object": body}))
        return self.send(200, body)

    def do_POST(self):
        path = self.path.split("?")[0].rstrip("/")
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if path.startswith("/_test/"):
            return self.test_control(path, body)
        created = kind_of_collection(path)
        collection = created and "/".join(path.split("/")[:-3] + [path.split("/")[-1]])
        if created and collection in COLLECTIONS and collection_group(collection) in CLUSTER_GROUP_NAMES:
            api_version, kind = created
            body.setdefault("apiVersion", api_version)
            body.setdefault("kind", kind)
            body.setdefault("metadata", {}).setdefault("namespace", path.strip("/").split("/")[-2])
            with LOCK:
                if (body["metadata"]["namespace"], body["metadata"]["name"]) in COLLECTIONS[collection]:
                    return self.failure(409, "AlreadyExists", "already exists")
                body["metadata"].pop("resourceVersion", None)
                cluster_change("ADDED", collection, body)
                log(json.dumps({"post": path_of(body), "object": body}))
                return self.send(201, body)
        if created:
            api_version, kind = created
            body.setdefault("apiVersion", api_version)
            body.setdefault("kind", kind)
            body.setdefault("metadata", {}).setdefault("namespace", path.strip("/").split("/")[-2])
            at = path_of(body)
            if at in OBJECTS:
                return self.failure(409, "AlreadyExists", "already exists")
            body.setdefault("metadata", {})["resourceVersion"] = "1"
            OBJECTS[at] = body
            log(json.dumps({"post": at, "object": body}))
            return self.send(201, body)
        if path != "/apis/authentication.k8s.io/v1/tokenreviews" or TOKENS is None:
            return self.failure(404, "NotFound", f"{path} not found")
        log(json.dumps(body))
        spec = body.get("spec", {})
        user = TOKENS.get(spec.get("token", ""))
        status = {"authenticated": False, "error": "invalid bearer token"}
        if user:
            ns = user.split(":")[2]
            status = {"authenticated": True,
                      "user": {"username": user, "uid": "8a3c9c5e-0d1f-4f2e-9b1a-3c2d1e0f4a5b",
                               "groups": ["system:serviceaccounts", f"system:serviceaccounts:{ns}",
                                          "system:authenticated"]},
                      "audiences": spec.get("audiences") or ["https://kubernetes.default.svc.cluster.local"]}
        return self.send(201, {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                               "metadata": {"creationTimestamp": None}, "spec": spec, "status": status})

    def log_message(self, *args):
        pass


TOKENS = None
LOG = None
OBJECTS = {}
# List and watch: the collections served (cluster-wide path -> {(namespace, name): object}),
# each one's kind and apiVersion, the events so far (resourceVersion, collection, event), and
# what the test asked for.
LOCK = threading.Condition()
RV = 1000
COLLECTIONS = {}
KINDS = {}
API_VERSIONS = {}
EVENTS = []
EXPIRED_BELOW = 0
EXPIRES = 0
DROPS = 0
REQUESTS = []
CLUSTER = []
# --port: where to listen (default: a free port).
PORT = [0]


def log(entry):
    """Appends one JSON line to LOG, when there is one."""
    if LOG:
        with open(LOG, "a") as f:
            f.write(entry + "\n")


def merge(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge(out.get(k), v)
    return out


def cluster_object(path):
    """(collection, (namespace, name)) of a namespaced object path of a --cluster kind
    (/apis/G/V/namespaces/NS/PLURAL/NAME), if it is one."""
    parts = path.strip("/").split("/")
    if len(parts) >= 6 and parts[-4] == "namespaces":
        collection = "/" + "/".join(parts[:-4] + [parts[-2]])
        if collection in COLLECTIONS and collection_group(collection) in CLUSTER_GROUP_NAMES:
            return collection, (parts[-3], parts[-1])
    return None


def collection_group(collection):
    parts = collection.strip("/").split("/")
    return "" if parts[0] == "api" else parts[1]


def cluster_change(kind, collection, obj):
    """Keeps a change of a --cluster object (the caller holds LOCK) and records its event."""
    global RV
    RV += 1
    obj.setdefault("metadata", {})["resourceVersion"] = str(RV)
    key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
    if kind == "DELETED":
        COLLECTIONS[collection].pop(key, None)
    else:
        COLLECTIONS[collection][key] = obj
    EVENTS.append((RV, collection, {"type": kind, "object": obj}))
    LOCK.notify_all()


def kind_of_collection(path):
    """(apiVersion, kind) of a namespaced collection path (/api/v1/namespaces/NS/PLURAL)."""
    parts = path.strip("/").split("/")
    if len(parts) >= 5 and parts[-3] == "namespaces":
        group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
        for r in GROUPS.get((group, version), []):
            if r["name"] == parts[-1]:
                return (f"{group}/{version}" if group else version), r["kind"]
    return None


def plural_of(obj):
    """An object's resource name, as its group's discovery lists it."""
    group, _, version = obj["apiVersion"].rpartition("/")
    for r in GROUPS.get((group, version), []):
        if r["kind"] == obj["kind"] and "/" not in r["name"]:
            return r["name"]
    return obj["kind"].lower() + "s"


def collection_of(obj):
    group, _, version = obj["apiVersion"].rpartition("/")
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    return f"{prefix}/{plural_of(obj)}"


def serve_collections():
    """Every listable resource of GROUPS and CLUSTER_GROUPS, empty until objects arrive."""
    GROUPS.update(CLUSTER_GROUPS)
    for (g, v), resources in GROUPS.items():
        for r in resources:
            if "list" not in r["verbs"]:
                continue
            prefix = f"/apis/{g}/{v}" if g else f"/api/{v}"
            path = f"{prefix}/{r['name']}"
            COLLECTIONS.setdefault(path, {})
            KINDS[path] = r["kind"]
            API_VERSIONS[path] = f"{g}/{v}" if g else v


def keep(obj):
    global RV
    RV += 1
    obj.setdefault("metadata", {})["resourceVersion"] = str(RV)
    COLLECTIONS[collection_of(obj)][(obj["metadata"].get("namespace", ""), obj["metadata"]["name"])] = obj


def path_of(obj):
    group, _, version = obj["apiVersion"].rpartition("/")
    plural = plural_of(obj)
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    ns = obj["metadata"].get("namespace")
    if ns and obj["kind"] != "Namespace":
        prefix += f"/namespaces/{ns}"
    return f"{prefix}/{plural}/{obj['metadata']['name']}"


def main():
    global TOKENS, LOG
    args = sys.argv[2:]
    serve_collections()
    while args:
        flag, value, args = args[0], args[1], args[2:]
        if flag == "--tokens":
            with open(value) as f:
                TOKENS = json.load(f)
        elif flag == "--log":
            LOG = value
        elif flag == "--object":
            with open(value) as f:
                obj = json.load(f)
            obj.setdefault("metadata", {})["resourceVersion"] = "1"
            OBJECTS[path_of(obj)] = obj
            if obj["kind"] == "Namespace":
                CLUSTER.append(json.loads(json.dumps(obj)))
        elif flag == "--port":
            PORT[0] = int(value)
        elif flag == "--cluster":
            with open(value) as f:
                CLUSTER.extend(json.load(f)["items"])
        else:
            raise SystemExit(f"unknown flag {flag}")
    for obj in CLUSTER:
        keep(obj)
    server = ThreadingHTTPServer(("127.0.0.1", PORT[0]), Handler)
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(server.server_port))
    import os
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
