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
(and `GET /api/v1/namespaces` lists the Namespaces), PUT replaces one when its resourceVersion
is the current one (else 409 Conflict, as the API server does), POST to a collection creates
one (409 AlreadyExists when it is there).

Every TokenReview, PUT and POST is appended to LOG (one JSON line each).

    python3 apiserver.py PORT_FILE [--tokens TOKENS_JSON] [--log LOG] [--object FILE]...
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


class Handler(BaseHTTPRequestHandler):
    def send(self, code, doc):
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?")[0].rstrip("/")
        if path in OBJECTS:
            return self.send(200, OBJECTS[path])
        if path == "/api/v1/namespaces":
            items = [o for p, o in sorted(OBJECTS.items()) if o["kind"] == "Namespace"]
            return self.send(200, {"kind": "NamespaceList", "apiVersion": "v1",
                                   "metadata": {"resourceVersion": "1"}, "items": items})
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
        return self.send(404, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                               "message": f"{path} not found", "reason": "NotFound", "code": 404})

    def do_PUT(self):
        path = self.path.split("?")[0].rstrip("/")
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if path not in OBJECTS:
            return self.send(404, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                   "message": f"{path} not found", "reason": "NotFound", "code": 404})
        current = OBJECTS[path]["metadata"]["resourceVersion"]
        if body.get("metadata", {}).get("resourceVersion") != current:
            return self.send(409, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                   "message": "the object has been modified", "reason": "Conflict", "code": 409})
        body["metadata"]["resourceVersion"] = str(int(current) + 1)
        OBJECTS[path] = body
        with open(LOG, "a") as f:
            f.write(json.dumps({"put": path, "object": body}) + "\n")
        return self.send(200, body)

    def do_POST(self):
        path = self.path.split("?")[0].rstrip("/")
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if path.endswith("/configmaps"):
            body.setdefault("apiVersion", "v1")
            body.setdefault("kind", "ConfigMap")
            at = path_of(body)
            if at in OBJECTS:
                return self.send(409, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                       "message": "already exists", "reason": "AlreadyExists", "code": 409})
            body.setdefault("metadata", {})["resourceVersion"] = "1"
            OBJECTS[at] = body
            with open(LOG, "a") as f:
                f.write(json.dumps({"post": at, "object": body}) + "\n")
            return self.send(201, body)
        if path != "/apis/authentication.k8s.io/v1/tokenreviews" or TOKENS is None:
            return self.send(404, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                   "message": f"{path} not found", "reason": "NotFound", "code": 404})
        with open(LOG, "a") as f:
            f.write(json.dumps(body) + "\n")
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


def path_of(obj):
    group, _, version = obj["apiVersion"].rpartition("/")
    plural = obj["kind"].lower() + "s"
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    ns = obj["metadata"].get("namespace")
    if ns and obj["kind"] != "Namespace":
        prefix += f"/namespaces/{ns}"
    return f"{prefix}/{plural}/{obj['metadata']['name']}"


def main():
    global TOKENS, LOG
    args = sys.argv[2:]
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
        else:
            raise SystemExit(f"unknown flag {flag}")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(server.server_port))
    import os
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
