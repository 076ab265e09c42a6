#!/usr/bin/env bash
# Regenerates the seed corpora under fuzz/corpus/<target>/ (files named seed-*) from what the
# repository already holds: the examples, the Gateway API conformance manifests, the YAML in the
# crates' tests, hand-written HTTP requests, and snapshots the control plane builds from the
# examples. Inputs kept from crashes (crash-*) are left alone.
#
# Usage: fuzz/seed.sh            (the snapshot seeds build and run the control crate's
#                                 fuzz_seeds example of the weft crate)
set -euo pipefail
cd "$(dirname "$0")/.."

python3 - <<'PY'
import hashlib, os, re, base64, json, glob

CORPUS = "fuzz/corpus"
seeds = {}  # target -> set of bytes

def add(target, data):
    if isinstance(data, str):
        data = data.encode()
    seeds.setdefault(target, set()).add(data)

# ---- The dialect tables, read from the harness so both agree on the first byte.
tables = {}
src = open("fuzz/src/config.rs").read()
for name, body in re.findall(r"pub const (\w+): &\[\(&str, &str\)\] = &\[(.*?)\];", src, re.S):
    tables[name] = re.findall(r'\("([^"]+)", "([^"]+)"\),', body)
targets = {"ISTIO": "config_istio", "LINKERD": "config_linkerd",
           "GATEWAY_API": "config_gateway", "SMI": "config_smi"}

# ---- YAML texts: files, and string literals of the crates' tests.
def rust_literals(text):
    """The string literals of Rust source (plain and raw), unescaped; rough but sufficient."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif c == "r" and re.match(r'r#*"', text[i:]) and not (i and (text[i-1].isalnum() or text[i-1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            if end < 0:
                break
            out.append(text[i + 2 + len(hashes):end])
            i = end + 1 + len(hashes)
        elif c == "'":
            m = re.match(r"'(\\.|\\x..|\\u\{[0-9a-fA-F]+\}|[^\\'])'", text[i:])
            i += len(m.group(0)) if m else 1
        elif c == '"':
            j, s = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\":
                    e = text[j + 1]
                    if e == "\n":
                        j += 2
                        while j < n and text[j] in " \t\n":
                            j += 1
                        continue
                    simple = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "'": "'"}
                    if e in simple:
                        s.append(simple[e]); j += 2
                    elif e == "x":
                        s.append(chr(int(text[j + 2:j + 4], 16))); j += 4
                    elif e == "u":
                        k = text.index("}", j)
                        s.append(chr(int(text[j + 3:k], 16))); j = k + 1
                    else:
                        s.append(e); j += 2
                else:
                    s.append(text[j]); j += 1
            out.append("".join(s))
            i = j + 1
        else:
            i += 1
    return out

texts = []
for f in sorted(glob.glob("examples/**/*.yaml", recursive=True) + glob.glob("testdata/**/*.yaml", recursive=True)):
    texts.append(open(f).read())
for f in sorted(glob.glob("crates/**/tests.rs", recursive=True) + glob.glob("crates/**/tests/*.rs", recursive=True)):
    for lit in rust_literals(open(f).read()):
        if "kind:" in lit and "apiVersion" in lit:
            # format! strings write braces twice.
            texts.append(lit.replace("{{", "{").replace("}}", "}"))

def documents(text):
    doc = []
    for line in text.split("\n"):
        if line.rstrip() in ("---", "..."):
            yield "\n".join(doc); doc = []
        else:
            doc.append(line)
    yield "\n".join(doc)

def header(doc, field):
    m = re.search(r"^%s:\s*(\S+)\s*$" % field, doc, re.M)
    return m.group(1).strip("'\"") if m else None

for text in texts:
    add("config_any", text)
    for doc in documents(text):
        api, kind = header(doc, "apiVersion"), header(doc, "kind")
        if not api or not kind:
            continue
        body = re.sub(r"^(apiVersion|kind):.*\n?", "", doc, flags=re.M)
        if (api, kind) == ("weft.dev/v1alpha1", "Mesh"):
            add("config_mesh", body)
        for table, target in targets.items():
            # Its own entry, else the first of its kind (another version).
            entries = tables[table]
            picks = [i for i, e in enumerate(entries) if e == (api, kind)]
            picks += [i for i, (_, k) in enumerate(entries) if k == kind]
            if picks:
                add(target, bytes([picks[0]]) + body.encode())

# ---- h1_request: one client connection each.
CRLF = "\r\n"
def req(*lines, body=""):
    return (CRLF.join(lines) + CRLF + CRLF + body).encode()
h1 = [
    req("GET / HTTP/1.1", "Host: web"),
    req("GET /api/items?id=1&x=%20 HTTP/1.1", "Host: web.default.svc.cluster.local:80", "Accept: */*", "User-Agent: curl/8"),
    req("GET http://reviews:9080/reviews/0 HTTP/1.1", "Host: reviews:9080"),
    req("GET / HTTP/1.0"),
    req("HEAD / HTTP/1.1", "Host: a", "Connection: close"),
    req("OPTIONS * HTTP/1.1", "Host: a"),
    req("CONNECT reviews:9080 HTTP/1.1", "Host: reviews:9080"),
    req("POST /books HTTP/1.1", "Host: books", "Content-Length: 11", "Content-Type: application/json", body='{"id": 42}\n'),
    req("POST /upload HTTP/1.1", "Host: a", "Transfer-Encoding: chunked",
        body="5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n"),
    req("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", body="ffffffffffffffff\r\nx\r\n0\r\n\r\n"),
    req("POST / HTTP/1.1", "Host: a", "Content-Length: 5", "Transfer-Encoding: chunked", body="0\r\n\r\n"),
    req("POST / HTTP/1.1", "Host: a", "Content-Length: 5", "Content-Length: 6", body="hello!"),
    req("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: gzip, chunked", body="0\r\n\r\n"),
    req("GET / HTTP/1.1", "Host: a", "Host: b"),
    req("GET / HTTP/1.1", "Host: a", "X-Folded: one", " two"),
    req("GET / HTTP/1.1", "Host: a", "X-Big: " + "x" * 20000),
    req("GET / HTTP/1.1", "Host: a", *["X-H%d: %d" % (i, i) for i in range(120)]),
    req("GET / HTTP/1.1", "Host: a", "Expect: 100-continue", "Content-Length: 3") + b"abc",
    req("GET / HTTP/1.1", "Host: a", "Connection: Upgrade", "Upgrade: websocket"),
    req("GET / HTTP/1.1", "Host: a", "Upgrade: h2c", "Connection: Upgrade, HTTP2-Settings", "HTTP2-Settings: AAMAAABkAAQAAP__"),
    req("GET / HTTP/1.1", "Host: a") + req("GET /2 HTTP/1.1", "Host: a") + req("POST /3 HTTP/1.1", "Host: a", "Content-Length: 1", body="z"),
    b"GET / HTTP/1.1\nHost: a\n\n",
    b"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
    b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000"),
]
for h in h1:
    add("h1_request", h)

# ---- detect: connection prefixes and x-weft-peer values.
def peer(**fields):
    return base64.urlsafe_b64encode(json.dumps(fields).encode()).rstrip(b"=")
for d in [b"\x16", b"\x16\x03", b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03" + bytes(32),
          b"\x16\x02", b"\x17\x03\x03", b"GET / HTTP/1.1\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
          peer(workload="web-v1", namespace="default", app="web", version="v1",
               canonical_service="web", canonical_revision="v1", principal="spiffe://cluster.local/ns/default/sa/web",
               cluster="Kubernetes"),
          peer(workload="x" * 600), peer(app=1), b"e30", b"!!"]:
    add("detect", d)

# ---- jwt: 0 JWKS, 1 token, 2 claims (signed), 3 header + claims (signed).
m = re.search(r'pub const JWKS: &str = r#"(.*?)"#;', open("fuzz/src/jwt.rs").read(), re.S)
add("jwt", b"\0" + m.group(1).encode())
add("jwt", b'\0{"keys": [{"kty": "oct", "k": "c2VjcmV0"}, {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}]}')
add("jwt", b'\0{"keys": []}')
for f in glob.glob("examples/jwt/*.yaml"):
    for js in re.findall(r'(\{"keys".*\})', open(f).read()):
        add("jwt", b"\0" + js.encode())
def b64(o):
    return base64.urlsafe_b64encode(json.dumps(o).encode()).rstrip(b"=").decode()
iss = "https://issuer.example"
claims = {"iss": iss, "sub": "alice", "aud": ["web"], "exp": 4000000000, "nbf": 1,
          "groups": {"main": "admins"}, "azp": "cli"}
add("jwt", b"\1" + ("%s.%s.sig" % (b64({"alg": "ES256", "kid": "ec"}), b64(claims))).encode())
add("jwt", b"\1" + ("%s.%s." % (b64({"alg": "none"}), b64(claims))).encode())
add("jwt", b"\1" + ("%s.%s.AAAA" % (b64({"alg": "RS256", "kid": "rsa"}), b64(claims))).encode())
add("jwt", b"\1" + ("%s.%s.AAAA" % (b64({"alg": "EdDSA"}), b64(claims))).encode())
add("jwt", b"\2" + json.dumps(claims).encode())
add("jwt", b"\2" + json.dumps({"iss": iss, "sub": "bob", "aud": "api", "exp": 1}).encode())
add("jwt", b"\2" + json.dumps({"iss": iss, "exp": 1.5}).encode())
add("jwt", b"\3" + b'{"alg":"ES256","kid":"ec"}\n' + json.dumps(claims).encode())
add("jwt", b"\3" + b'{"alg":"ES256","kid":7}\n{}')

# ---- authz_paths: target, host, method, then tagged rule entries.
for a in ["/a/b/c?x=1\nexample.com\nGET\np/a/{*}/c\n!/a/{**}\nhexample.*\nmGET",
          "/admin/users\nhttpbin.foo:8000\nPOST\np/admin*\nwrequest.headers[x-user]=alice\nwsource.ip=10.0.0.0/8",
          "/%2e%2E/./x//y\\z\nh\nDELETE\np*/y/z\n!*\nH*.internal",
          "/books/42\nbooks\nGET\ne/books\nb/books\ns/books/\nr/books/[0-9]+\np/books/{*}\np/{**}/42",
          "/x/%00\n\nGET\np/x/*",
          "/v1/{*}/z\nh:1\nPUT\np/v1/{*}/{**}\np/{*}}\np/a*b\nwrequest.auth.claims[groups]=a\nwdestination.port=8000"]:
    add("authz_paths", a)

# ---- Write them out (seed-<hash>), replacing earlier seeds.
for target, items in seeds.items():
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    for f in glob.glob(os.path.join(d, "seed-*")):
        os.remove(f)
    for data in items:
        name = "seed-" + hashlib.sha1(data).hexdigest()[:16]
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    print(f"{target}: {len(items)} seeds")
PY

# Snapshots as the control plane builds them from the examples, with endpoints.
mkdir -p fuzz/corpus/snapshot
rm -f fuzz/corpus/snapshot/seed-*
cargo run --quiet -p weft --example fuzz_seeds -- fuzz/corpus/snapshot
echo "snapshot: $(ls fuzz/corpus/snapshot | grep -c '^seed-') seeds"
