#!/usr/bin/env python3
"""Checks of deploy/ that need no container engine and no cluster (run by scripts/check-deploy.sh).

    check-deploy.py BINARY

One line per check (`ok`, `FAIL` or `skip`, the check's name, what it saw); exit 1 on any
failure. With CI=true a check whose tool is missing fails instead of being skipped. The wrapper
passes the tools it found or installed in HAPROXY and KUBERNETES_VALIDATE (empty: missing).
"""

import ipaddress
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
CI = os.environ.get("CI", "").lower() == "true"

failures = 0


def report(status, name, detail):
    global failures
    if status == "FAIL":
        failures += 1
    print(f"{status:<4} {name}: {detail}", flush=True)


def missing_tool(name, what):
    """A tool that could not be found or installed: a failure in CI, else a skip."""
    report("FAIL" if CI else "skip", name, f"{what} not available" + (" (CI=true)" if CI else ""))


try:
    import yaml
except ImportError:  # the wrapper installs it; here only if that failed
    yaml = None


def rel(path):
    return str(Path(path).relative_to(ROOT))


# ---------------------------------------------------------------------------------------------
# Every YAML file under deploy/ parses, every document of it.

def check_yaml():
    files = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))
    documents, bad = 0, []
    for path in files:
        try:
            documents += sum(1 for _ in yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as error:
            bad.append(f"{rel(path)}: {str(error).splitlines()[0]}")
    if not files:
        report("FAIL", "yaml", "no YAML file under deploy/")
    elif bad:
        report("FAIL", "yaml", "; ".join(bad))
    else:
        report("ok", "yaml", f"{len(files)} files, {documents} documents parse")
    return not bad


def load_all(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def k8s_objects():
    objects = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in load_all(path):
            if isinstance(doc, dict) and "kind" in doc and "apiVersion" in doc:
                objects.append((path, doc))
    return objects


# ---------------------------------------------------------------------------------------------
# Every environment variable deploy/ sets for realtime-core is one the binary reads.

def compose_files():
    return sorted(DEPLOY.glob("compose*.yaml")) + sorted(DEPLOY.glob("compose*.yml"))


def is_realtime_core(service):
    build = service.get("build")
    if isinstance(build, dict) and str(build.get("dockerfile", "")).endswith("deploy/Dockerfile"):
        return True
    return "realtime-core" in str(service.get("image", ""))


def compose_env(service):
    env = service.get("environment") or {}
    if isinstance(env, dict):
        return list(env)
    return [str(item).split("=", 1)[0] for item in env]


def dockerfile_env(path):
    """Names set by ENV in the final stage (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    stages = re.split(r"(?im)^FROM\s", text)
    names = []
    for line in stages[-1].splitlines():
        match = re.match(r"(?i)^ENV\s+(.*)$", line.strip())
        if not match:
            continue
        words = shlex.split(match.group(1))
        if words and "=" in words[0]:
            names += [w.split("=", 1)[0] for w in words if "=" in w]
        elif words:  # legacy `ENV NAME value`
            names.append(words[0])
    return names


def k8s_env(objects):
    """(names, problems) set on realtime-core's Deployment containers, through env and the
    ConfigMaps and Secrets named by envFrom."""
    by_kind = {(doc["kind"], doc.get("metadata", {}).get("name")): doc for _, doc in objects}
    names, problems = [], []
    deployments = [doc for _, doc in objects if doc["kind"] == "Deployment"]
    if not deployments:
        problems.append("no Deployment in deploy/k8s")
    for deployment in deployments:
        for container in deployment["spec"]["template"]["spec"].get("containers", []):
            names += [e["name"] for e in container.get("env", [])]
            for source in container.get("envFrom", []):
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if key not in source:
                        continue
                    ref = source[key]["name"]
                    doc = by_kind.get((kind, ref))
                    if doc is None:
                        problems.append(f"envFrom names {kind} {ref}, not defined in deploy/k8s")
                        continue
                    names += list(doc.get("data") or {}) + list(doc.get("stringData") or {})
    return names, problems


def help_env_names(binary):
    """Names the binary's clap arguments read: `[env: NAME=value]`, or `[env: NAME]` for the
    ones whose values --help hides (secrets)."""
    result = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"`{binary} --help` exited {result.returncode}: {result.stderr.strip()[:200]}")
    text = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)  # in case colours were forced
    return set(re.findall(r"\[env: ([A-Za-z_][A-Za-z0-9_]*)[=\]]", text))


def check_env(binary):
    wanted = {}  # name -> where it is set
    for path in compose_files():
        doc = yaml.safe_load(path.read_text()) or {}
        for service_name, service in (doc.get("services") or {}).items():
            if is_realtime_core(service):
                for name in compose_env(service):
                    wanted.setdefault(name, f"{rel(path)} ({service_name})")
    dockerfile = DEPLOY / "Dockerfile"
    for name in dockerfile_env(dockerfile):
        wanted.setdefault(name, rel(dockerfile))
    names, problems = k8s_env(k8s_objects())
    for name in names:
        wanted.setdefault(name, "deploy/k8s")
    # OTEL_* are read by the OpenTelemetry set-up from the environment (src/telemetry.rs), not
    # by clap, so --help does not list them.
    checked = {n: w for n, w in wanted.items() if not n.startswith("OTEL_")}
    try:
        known = help_env_names(binary)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as error:
        report("FAIL", "env", f"cannot read the variables of {binary}: {error}")
        return
    if not known:
        problems.append(f"`{binary} --help` lists no [env: …] at all")
    unknown = sorted(f"{n} (in {w})" for n, w in checked.items() if n not in known)
    problems += [f"not read by the binary: {u}" for u in unknown]
    if problems:
        report("FAIL", "env", "; ".join(problems))
    else:
        skipped = sorted(set(wanted) - set(checked))
        report("ok", "env", f"{len(checked)} variables set by deploy/ are all in `--help`"
               + (f" ({', '.join(skipped)} read outside clap, not checked)" if skipped else ""))


# ---------------------------------------------------------------------------------------------
# haproxy -c on deploy/haproxy.cfg.

def haproxy_c(haproxy, path, zero_warning=False):
    args = [haproxy, "-c", "-f", str(path)] + (["-dW"] if zero_warning else [])
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    return result.returncode, (result.stdout + result.stderr)


def localized_config(text, replacements):
    """The configuration with every `server NAME HOST:PORT … [check port P]` pointed at
    127.0.0.1 (replacements: (server, host, port) -> new port; `check port` by the same map)."""
    def server_line(match):
        indent, name, host, port, rest = match.groups()
        new_port = replacements.get((name, host, port), port)
        check_port = re.search(r"\bport (\d+)", rest)
        if check_port:
            new_check = replacements.get((name, host, check_port.group(1)), check_port.group(1))
            rest = rest[:check_port.start(1)] + str(new_check) + rest[check_port.end(1):]
        return f"{indent}server {name} 127.0.0.1:{new_port}{rest}"
    return re.sub(r"(?m)^(\s*)server\s+(\S+)\s+([^\s:]+):(\d+)(.*)$", server_line, text)


def check_haproxy(haproxy):
    cfg = DEPLOY / "haproxy.cfg"
    if not haproxy:
        missing_tool("haproxy -c", "haproxy")
        missing_tool("haproxy -c (zero warnings)", "haproxy")
        return False
    code, output = haproxy_c(haproxy, cfg)
    warnings = [l for l in output.splitlines() if "[WARNING]" in l or "[ALERT]" in l]
    # Compose service names do not resolve outside compose; `init-addr last,libc,none` lets
    # HAProxy start anyway and its resolvers find them later. Any other warning counts.
    other = [w for w in warnings if "could not resolve address" not in w]
    if code != 0 or other:
        report("FAIL", "haproxy -c", f"{rel(cfg)} exit {code}: " + " | ".join(other or warnings or output.splitlines()[-3:]))
        return False
    report("ok", "haproxy -c", f"{rel(cfg)} valid as it is ({len(warnings)} unresolvable compose names allowed)")
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "haproxy.cfg"
        local.write_text(localized_config(cfg.read_text(), {}))
        code, output = haproxy_c(haproxy, local, zero_warning=True)
    if code != 0:
        lines = [l for l in output.splitlines() if "[WARNING]" in l or "[ALERT]" in l]
        report("FAIL", "haproxy -c (zero warnings)", " | ".join(lines or output.splitlines()[-3:]))
        return False
    report("ok", "haproxy -c (zero warnings)", "no warning with the servers at 127.0.0.1")
    return True


# ---------------------------------------------------------------------------------------------
# haproxy.cfg and compose.cluster.yaml agree.

def haproxy_servers(text):
    """{backend: [(name, host, port, rest)]}"""
    servers, backend = {}, None
    for line in text.splitlines():
        stripped = line.split("#", 1)[0].strip()
        section = re.match(r"^(frontend|backend|listen|defaults|global|resolvers)\s*(\S*)", stripped)
        if section and not line.startswith((" ", "\t")):
            backend = section.group(2) if section.group(1) in ("backend", "listen") else None
            continue
        match = re.match(r"^server\s+(\S+)\s+([^\s:]+):(\d+)(.*)$", stripped)
        if match and backend:
            servers.setdefault(backend, []).append(match.groups())
    return servers


def check_cluster_consistency():
    cfg = (DEPLOY / "haproxy.cfg").read_text()
    compose = yaml.safe_load((DEPLOY / "compose.cluster.yaml").read_text())
    services = compose.get("services") or {}
    problems = []
    backends = haproxy_servers(cfg)
    rtmp = backends.get("realtime_rtmp", [])
    http = backends.get("realtime_http", [])
    if not rtmp or not http:
        problems.append("haproxy.cfg lacks backend realtime_rtmp or realtime_http servers")
    instances = {n for n, s in services.items() if is_realtime_core(s)}
    if len(instances) < 2:
        problems.append(f"compose.cluster.yaml has {len(instances)} realtime-core services, not 2+")

    def env_of(name):
        env = services[name].get("environment") or {}
        return env if isinstance(env, dict) else dict(str(i).split("=", 1) for i in env if "=" in str(i))

    for backend, servers, var, default in (("realtime_rtmp", rtmp, "RTMP_INTERNAL_PORT", "1937"),
                                           ("realtime_http", http, "PORT", "8080")):
        hosts = {host for _, host, _, _ in servers}
        if hosts != instances:
            problems.append(f"{backend} servers {sorted(hosts)} are not the instances {sorted(instances)}")
        for _, host, port, rest in servers:
            if host not in services:
                continue
            if str(env_of(host).get(var, default)) != port:
                problems.append(f"{backend} sends {host} to port {port}, its {var} is {env_of(host).get(var, default)}")
            if backend == "realtime_rtmp" and "send-proxy-v2" not in rest:
                problems.append(f"{backend} server {host} without send-proxy-v2")
            if "check" not in rest.split():
                problems.append(f"{backend} server {host} without a health check")
    haproxy = services.get("haproxy", {})
    address = None
    for net in (haproxy.get("networks") or {}).values() if isinstance(haproxy.get("networks"), dict) else []:
        if isinstance(net, dict) and net.get("ipv4_address"):
            address = ipaddress.ip_address(net["ipv4_address"])
    if address is None:
        problems.append("haproxy has no fixed ipv4_address for RTMP_TRUSTED_PROXIES to name")
    subnets = [ipaddress.ip_network(c["subnet"]) for n in (compose.get("networks") or {}).values()
               for c in ((n or {}).get("ipam") or {}).get("config", []) if "subnet" in c]
    if address is not None and not any(address in s for s in subnets):
        problems.append(f"haproxy's address {address} is in no network's subnet {[str(s) for s in subnets]}")
    for name in sorted(instances):
        env = env_of(name)
        if str(env.get("RTMP_PROXY_PROTOCOL", "false")).lower() != "true":
            problems.append(f"{name}: RTMP_PROXY_PROTOCOL is not true but HAProxy sends PROXY headers")
        trusted = [ipaddress.ip_network(c.strip(), strict=False)
                   for c in str(env.get("RTMP_TRUSTED_PROXIES", "")).split(",") if c.strip()]
        if address is not None and not any(address in t for t in trusted):
            problems.append(f"{name}: RTMP_TRUSTED_PROXIES {env.get('RTMP_TRUSTED_PROXIES')} does not cover haproxy {address}")
        if "REDIS_URL" not in env or not str(env.get("DATABASE_URL", "")).startswith("postgres"):
            problems.append(f"{name}: cluster mode needs REDIS_URL and a postgres:// DATABASE_URL")
    if problems:
        report("FAIL", "compose/haproxy agree", "; ".join(problems))
    else:
        report("ok", "compose/haproxy agree", f"{len(instances)} instances behind both backends, PROXY v2 "
               f"from {address} which their RTMP_TRUSTED_PROXIES trust, shared PostgreSQL and Redis")


# ---------------------------------------------------------------------------------------------
# The termination grace covers the service's shutdown.

def shutdown_budget():
    """Seconds the service may take after SIGTERM: the sum of the bounded steps in the source
    (src/app/shutdown.rs SHUTDOWN_*_TIMEOUT, the HTTP server's shutdown_timeout, the trace
    exporter's SHUTDOWN_TIMEOUT), so a step added there raises the budget here."""
    def seconds(kind, value):
        return int(value) / (1000 if kind == "millis" else 1)

    parts = {}
    shutdown = (ROOT / "src/app/shutdown.rs").read_text()
    for name, kind, value in re.findall(
            r"const (SHUTDOWN_\w+_TIMEOUT): Duration = Duration::from_(secs|millis)\((\d+)\)", shutdown):
        parts[name] = seconds(kind, value)
    if "SHUTDOWN_DRAIN_TIMEOUT" not in parts:
        raise RuntimeError("SHUTDOWN_DRAIN_TIMEOUT not found in src/app/shutdown.rs")
    start = (ROOT / "src/app/start.rs").read_text()
    for value in re.findall(r"\.shutdown_timeout\((\d+)\)", start):
        parts["http shutdown_timeout"] = int(value)
    telemetry = (ROOT / "src/telemetry.rs").read_text()
    for kind, value in re.findall(r"const SHUTDOWN_TIMEOUT: Duration = Duration::from_(secs|millis)\((\d+)\)", telemetry):
        parts["trace export"] = seconds(kind, value)
    return sum(parts.values()), parts


def prestop_seconds(container):
    pre = (container.get("lifecycle") or {}).get("preStop") or {}
    if "sleep" in pre:
        return int(pre["sleep"]["seconds"])
    command = (pre.get("exec") or {}).get("command") or []
    text = " ".join(map(str, command))
    match = re.search(r"\bsleep\s+(\d+)", text)
    return int(match.group(1)) if match else 0


def compose_seconds(value):
    total = 0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us)", str(value)):
        total += float(number) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}[unit]
    return total


def check_grace():
    try:
        budget, parts = shutdown_budget()
    except (OSError, RuntimeError) as error:
        report("FAIL", "termination grace", f"cannot read the shutdown budget: {error}")
        return
    detail = " + ".join(f"{v:g}" for v in parts.values())
    problems, seen = [], []
    for path, doc in k8s_objects():
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        spec = doc["spec"]["template"]["spec"]
        grace = spec.get("terminationGracePeriodSeconds", 30)
        for container in spec.get("containers", []):
            pre = prestop_seconds(container)
            need = pre + budget
            seen.append(f"{doc['kind']} {doc['metadata']['name']} {grace} s >= preStop {pre} + {budget:g}")
            if grace < need:
                problems.append(f"{rel(path)}: terminationGracePeriodSeconds {grace} < preStop {pre} s + shutdown {budget:g} s ({detail})")
    for path in compose_files():
        doc = yaml.safe_load(path.read_text()) or {}
        for name, service in (doc.get("services") or {}).items():
            if is_realtime_core(service):
                grace = compose_seconds(service.get("stop_grace_period", "10s"))
                seen.append(f"{rel(path)} {name} {grace:g} s")
                if grace < budget:
                    problems.append(f"{rel(path)} {name}: stop_grace_period {grace:g} s < shutdown {budget:g} s")
    if not seen:
        problems.append("no Deployment in deploy/k8s")
    if problems:
        report("FAIL", "termination grace", "; ".join(problems))
    else:
        report("ok", "termination grace", f"shutdown budget {budget:g} s ({detail}, from src/); " + "; ".join(seen))


# ---------------------------------------------------------------------------------------------
# The Kubernetes manifests against the API schemas, and kustomization.yaml's list.

def check_k8s_schema(validator):
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    resources = kustomization.get("resources") or []
    absent = [r for r in resources if not (K8S / r).is_file()]
    if absent or not resources:
        report("FAIL", "kustomization", f"resources missing: {absent or 'none listed'}")
    else:
        report("ok", "kustomization", f"{len(resources)} resources listed, all present")
    if not validator:
        missing_tool("k8s schema", "kubernetes-validate")
        return
    files = [str(K8S / r) for r in resources if not absent]
    # 1.28 is the oldest version still served by the big clouds; the newest the validator knows.
    bad = []
    for version in ("1.28.0", None):
        args = [validator, "--strict", "--quiet"] + (["-k", version] if version else []) + files
        result = subprocess.run(args, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            bad.append((result.stdout + result.stderr).strip())
    if bad:
        report("FAIL", "k8s schema", " | ".join(bad))
    else:
        report("ok", "k8s schema", f"{len(files)} manifests valid (strict: no unknown field) for Kubernetes 1.28 and the validator's newest")


# ---------------------------------------------------------------------------------------------
# HAProxy really routes as configured: run it (servers at 127.0.0.1) in front of two stand-in
# instances. Proves the PROXY v2 header on RTMP, readiness checks on /readyz taking an instance
# out of both backends, the /metrics filter, WebSocket upgrades and HTTP to both instances.

class FakeInstance:
    """An HTTP port (/readyz, /whoami, WebSocket upgrade) and an RTMP port that reports the
    PROXY header it got, on 127.0.0.1."""

    def __init__(self, name):
        self.name, self.ready, self.proxy_headers = name, True, []
        self.http = self._listen(self._serve_http)
        self.rtmp = self._listen(self._serve_rtmp)

    def _listen(self, handler):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        threading.Thread(target=self._accept, args=(sock, handler), daemon=True).start()
        return sock.getsockname()[1]

    def _accept(self, sock, handler):
        while True:
            conn, _ = sock.accept()
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    def _serve_http(self, conn):
        with conn:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            line = data.split(b"\r\n", 1)[0].decode()
            path = line.split()[1]
            if path == "/readyz":
                status = "200 OK" if self.ready else "503 Service Unavailable"
                body = b"ready" if self.ready else b"down"
            elif b"upgrade: websocket" in data.lower():
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n")
                conn.sendall(b"hello " + self.name.encode())
                time.sleep(1)
                return
            else:
                status, body = "200 OK", self.name.encode()
            conn.sendall(f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)

    def _serve_rtmp(self, conn):
        # Reads the PROXY header (if any) and the publisher's bytes behind it, so nothing is
        # left unread when it closes (which would reset the connection before the reply).
        with conn:
            conn.settimeout(5)
            data = b""
            try:
                while True:
                    expected = 16 + int.from_bytes(data[14:16], "big") if data.startswith(PROXY_V2_SIGNATURE) else 0
                    if len(data) >= 16 and len(data) >= expected + RTMP_PROBE_BYTES:
                        break
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
            self.proxy_headers.append(data)
            conn.sendall(self.name.encode())


PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
RTMP_PROBE_BYTES = 16


def proxy_v2_source(header):
    """The source address and port of a PROXY v2 PROXY TCP4 header, else None."""
    if not header.startswith(PROXY_V2_SIGNATURE) or len(header) < 28:
        return None
    if header[12] != 0x21 or header[13] != 0x11:  # version 2, PROXY; TCP over IPv4
        return None
    return socket.inet_ntoa(header[16:20]), int.from_bytes(header[24:26], "big")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(port, path, headers=None):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""
    except OSError:  # not listening yet, or reset
        return None, ""


def rtmp_exchange(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"\x03" * RTMP_PROBE_BYTES)  # stands in for the start of a handshake
        local = sock.getsockname()
        reply = sock.recv(64).decode()
    return reply, local


def wait_for(condition, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def check_haproxy_runs(haproxy):
    name = "haproxy routes"
    if not haproxy:
        missing_tool(name, "haproxy")
        return
    instances = {"realtime-core-1": FakeInstance("realtime-core-1"),
                 "realtime-core-2": FakeInstance("realtime-core-2")}
    ports = {}
    for server, fake in instances.items():
        ports[(server, server, "1937")] = fake.rtmp
        ports[(server, server, "8080")] = fake.http
    text = localized_config((DEPLOY / "haproxy.cfg").read_text(), ports)
    front = {1935: free_port(), 8080: free_port(), 8404: free_port()}
    for public, local in front.items():
        text, count = re.subn(rf"(?m)^(\s*bind\s+)\S*:{public}\b", rf"\g<1>127.0.0.1:{local}", text)
        if count != 1:
            report("FAIL", name, f"haproxy.cfg has {count} binds on :{public}, expected 1")
            return
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "haproxy.cfg"
        cfg.write_text(text)
        log = open(Path(tmp) / "haproxy.log", "w+")
        process = subprocess.Popen([haproxy, "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
        try:
            http, rtmp = front[8080], front[1935]
            both = lambda: {http_get(http, "/whoami")[1] for _ in range(4)} == set(instances)
            if not wait_for(both, 15):
                problems.append("HTTP did not reach both instances (health checks on /readyz never passed?)")
            for _ in range(4):
                reply, local = rtmp_exchange(rtmp)
                if reply not in instances:
                    problems.append(f"RTMP reply {reply!r}")
                    break
                source = proxy_v2_source(instances[reply].proxy_headers[-1])
                if source != (local[0], local[1]):
                    problems.append(f"RTMP to {reply} without a PROXY v2 header naming the publisher {local} (got {instances[reply].proxy_headers[-1][:28]!r})")
                    break
            status, _ = http_get(http, "/metrics/prometheus")
            if status != 404:
                problems.append(f"/metrics/prometheus through the balancer answered {status}, not 404")
            with socket.create_connection(("127.0.0.1", http), timeout=5) as sock:
                sock.sendall(b"GET /api/realtime/transcribe?sessionSlug=s HTTP/1.1\r\nHost: x\r\n"
                             b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
                answer = b""
                while b"hello" not in answer:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    answer += chunk
            if not answer.startswith(b"HTTP/1.1 101") or b"hello" not in answer:
                problems.append(f"WebSocket upgrade through the balancer: {answer[:60]!r}")
            # An instance that stops being ready (as one that got SIGTERM does) leaves both.
            instances["realtime-core-2"].ready = False
            # Each backend checks on its own schedule: wait for each.
            only_one = lambda: {http_get(http, "/whoami")[1] for _ in range(4)} == {"realtime-core-1"}
            if not wait_for(only_one, 15):
                problems.append("an instance failing /readyz still got HTTP requests")
            only_one = lambda: {rtmp_exchange(rtmp)[0] for _ in range(4)} == {"realtime-core-1"}
            if not wait_for(only_one, 15):
                problems.append("an instance failing /readyz still got RTMP connections")
        except OSError as error:
            problems.append(f"{type(error).__name__}: {error}")
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
            log.seek(0)
            tail = log.read().strip().splitlines()[-3:]
            log.close()
    if problems:
        report("FAIL", name, "; ".join(problems) + (f" (haproxy log: {' | '.join(tail)})" if tail else ""))
    else:
        report("ok", name, "both instances get HTTP and RTMP, RTMP starts with a PROXY v2 header naming the "
               "publisher, WebSocket upgrades pass, /metrics* is refused, a failing /readyz takes an instance out of both")


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    binary = sys.argv[1]
    if yaml is None:
        missing_tool("yaml", "PyYAML")
        return 1
    if not check_yaml():
        return 1
    check_env(binary)
    haproxy = os.environ.get("HAPROXY") or shutil.which("haproxy")
    if check_haproxy(haproxy):
        check_haproxy_runs(haproxy)
    elif haproxy:
        report("FAIL", "haproxy routes", "not run: haproxy.cfg does not pass `haproxy -c`")
    else:
        missing_tool("haproxy routes", "haproxy")
    check_cluster_consistency()
    check_grace()
    check_k8s_schema(os.environ.get("KUBERNETES_VALIDATE"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
