//! Pods for transparent interception (`spec.interception: transparent`): one Linux bridge per
//! mesh, one network namespace per replica whose `eth0` is a macvlan (bridge mode) on that
//! bridge, the nftables rules that send a pod's TCP traffic through its sidecar ([`tproxy`]), a
//! hosts file per pod that names every service by its virtual IP, and the record in
//! `$WEFT_HOME` that lets a later `weft up` (or `weft doctor`) remove what a `weft up` that died
//! left behind.
//!
//! Everything is done with the `ip` and `nft` commands, so what weft creates can be inspected
//! (and removed by hand) with the same tools: `ip netns list`, `ip -n NS addr`,
//! `ip netns exec NS nft list ruleset`. (The `nat` rules of [`capture_rules`] are what
//! `weft capture` installs in Kubernetes pods.)
//!
//! Why macvlans: traffic between two macvlans of the same device goes straight from one to the
//! other inside the macvlan driver, one hop as on loopback, where a veth pair per pod sends it
//! through both veths and the bridge's forwarding (and, on hosts with `br_netfilter`, through
//! the host's iptables: a FORWARD chain that drops by default, as Docker sets it, would drop
//! it). The bridge is only the macvlans' lower device and a switch for what users attach to it
//! themselves; the host's address on the mesh is a macvlan of its own (`wfg` and the bridge's
//! hash), since a macvlan's lower device cannot reach its macvlans.
//!
//! Addresses: the mesh's pods share `10.234.N.0/24`, N the first subnet no interface of the
//! host uses; `.1` is the host (its macvlan on the bridge, where the control plane listens),
//! `.2`–`.249` are pods, `.250`–`.254` are left for whatever users or tests attach to the
//! bridge themselves.
//! Services' virtual IPs are [`model::mesh::service_vips`] (`10.235.0.0/16`); they never leave
//! a pod.

use model::{Capture, ServiceSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};

/// The first two octets of every mesh's pod subnet (`10.234.N.0/24`).
pub const POD_PREFIX: [u8; 2] = [10, 234];
/// The host addresses of a subnet that pods get; `.250`–`.254` stay free for others.
const FIRST_POD_HOST: u8 = 2;
const LAST_POD_HOST: u8 = 249;
/// Where a sidecar takes the connections its pod receives (Istio's inbound capture port).
pub const INBOUND_PORT: u16 = model::names::POD_INBOUND_PORT;
/// A sidecar's admin listener in a pod (Istio's status port), reachable from the host.
pub const ADMIN_PORT: u16 = model::names::POD_ADMIN_PORT;
/// Where the capture rules send a pod's outbound TCP (Istio's outbound capture port).
pub const CAPTURE_PORT: u16 = model::names::POD_CAPTURE_PORT;
/// The sidecar's explicit outbound listener in a pod (for clients that are told a proxy).
pub const OUTBOUND_PORT: u16 = model::names::POD_OUTBOUND_PORT;
/// The SO_MARK a sidecar gives its own outbound sockets, which the capture rules let pass
/// (Istio's proxy uses the same value).
pub const SOCKET_MARK: u32 = 1337;
/// Namespace names start with this; `weft doctor` and leftover cleanup look only at these.
pub const NETNS_PREFIX: &str = "weft-";
/// Bridge names start with this (then a hash of the mesh's name: interface names have at most
/// 15 bytes).
pub const BRIDGE_PREFIX: &str = "wft";
/// The host's macvlan on a mesh's bridge, which holds the host's address in the mesh: `wfg` and
/// the bridge's hash.
const GATEWAY_PREFIX: &str = "wfg";
/// Host ends of pods' veth pairs started with this (then a hash of the namespace's name), before
/// pods had macvlans; still removed with a leftover pod.
const VETH_PREFIX: &str = "wfv";
/// The longest namespace name weft makes; longer ones are cut and end in a hash. (The kernel
/// allows more, but names are typed and read by people.)
const NETNS_MAX: usize = 64;
/// Where `ip netns exec` finds the files it puts over `/etc` inside a namespace.
const ETC_NETNS: &str = "/etc/netns";
/// The file that serialises subnet choice between `weft up`s starting together.
const SUBNET_LOCK: &str = "/run/weft-subnet.lock";
/// The linux capability that creating namespaces, links and iptables rules needs.
const CAP_NET_ADMIN: u32 = 12;

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("interception: transparent needs root or CAP_NET_ADMIN (to create network namespaces and iptables rules): run weft up as root, or use interception: proxy-env")]
    NotPrivileged,
    #[error("interception: transparent needs the `{tool}` command (Debian package {package}): install it, or use interception: proxy-env")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bridge {bridge} of mesh {mesh} exists already: a mesh of that name runs from another WEFT_HOME, or a weft up that died left it (`weft doctor --clean` removes leftovers)")]
    BridgeExists { bridge: String, mesh: String },
    #[error("no free pod subnet: every 10.234.N.0/24 is in use by an interface of this host")]
    NoSubnet,
    #[error("no free pod address in {0}: at most {n} pods per mesh", n = LAST_POD_HOST - FIRST_POD_HOST + 1)]
    NoAddress(String),
}

/// Whether this process may create namespaces, links and iptables rules: CAP_NET_ADMIN in its
/// effective set (which root has, unless its capabilities were dropped).
pub fn check_privileges() -> Result<(), PodError> {
    let status = std::fs::read_to_string("/proc/self/status").ok();
    let effective = status.as_deref().and_then(|s| {
        let caps = s.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
        u64::from_str_radix(caps.trim(), 16).ok()
    });
    let allowed = match effective {
        Some(caps) => caps & (1 << CAP_NET_ADMIN) != 0,
        None => nix::unistd::geteuid().is_root(),
    };
    if allowed {
        Ok(())
    } else {
        Err(PodError::NotPrivileged)
    }
}

/// Whether the commands pods are made with are installed: `ip` (iproute2) and `nft` (nftables,
/// for the capture rules).
pub fn check_tools() -> Result<(), PodError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = |tool: &str| std::env::split_paths(&path).any(|d| d.join(tool).is_file());
    for (tool, package) in [("ip", "iproute2"), ("nft", "nftables")] {
        if !found(tool) {
            return Err(PodError::MissingTool { tool, package });
        }
    }
    Ok(())
}

/// Runs `argv` and returns its stdout; a failure names the command and carries its stderr.
pub(crate) fn run(argv: &[&str]) -> Result<String, PodError> {
    run_with_input(argv, None)
}

pub(crate) fn run_with_input(argv: &[&str], input: Option<&str>) -> Result<String, PodError> {
    use std::io::Write;
    let command = argv.join(" ");
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..])
        .stdin(if input.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let spawn_err = |source| PodError::Spawn {
        command: command.clone(),
        source,
    };
    let mut child = cmd.spawn().map_err(spawn_err)?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).map_err(spawn_err)?;
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(PodError::Command {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// A short stable hash (FNV-1a, 8 hex digits) for names that must fit interface limits.
fn short_hash(text: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

/// The bridge of mesh `mesh`: `wft` and a hash of its name (11 bytes, under the 15 allowed).
pub fn bridge_name(mesh: &str) -> String {
    format!("{BRIDGE_PREFIX}{}", short_hash(mesh))
}

/// The namespace of replica `instance` of mesh `mesh`: `weft-MESH-INSTANCE`, cut to
/// [`NETNS_MAX`] bytes with a hash of the whole name at the end when longer.
pub fn netns_name(mesh: &str, instance: &str) -> String {
    let full = format!("{NETNS_PREFIX}{mesh}-{instance}");
    if full.len() <= NETNS_MAX {
        return full;
    }
    let hash = short_hash(&full);
    let keep = NETNS_MAX - hash.len() - 1;
    let mut cut = full[..keep].to_string();
    while !cut.is_char_boundary(cut.len()) {
        cut.pop();
    }
    format!("{cut}-{hash}")
}

/// The host's macvlan on bridge `bridge`, holding the host's address in the mesh.
fn gateway_link(bridge: &str) -> String {
    format!(
        "{GATEWAY_PREFIX}{}",
        bridge.strip_prefix(BRIDGE_PREFIX).unwrap_or(bridge)
    )
}

/// The host end of the veth pair a pod in namespace `ns` had when pods had veths.
fn veth_name(ns: &str) -> String {
    format!("{VETH_PREFIX}{}", short_hash(ns))
}

/// The address `.host` of subnet `n`.
fn subnet_addr(n: u8, host: u8) -> Ipv4Addr {
    let [a, b] = POD_PREFIX;
    Ipv4Addr::new(a, b, n, host)
}

/// Every IPv4 address the host's interfaces carry (`ip -j addr`).
fn host_addresses() -> Result<Vec<Ipv4Addr>, PodError> {
    #[derive(Deserialize)]
    struct Link {
        #[serde(default)]
        addr_info: Vec<Addr>,
    }
    #[derive(Deserialize)]
    struct Addr {
        #[serde(default)]
        family: String,
        #[serde(default)]
        local: String,
    }
    let out = run(&["ip", "-j", "addr"])?;
    let links: Vec<Link> = serde_json::from_str(&out).unwrap_or_default();
    Ok(links
        .iter()
        .flat_map(|l| &l.addr_info)
        .filter(|a| a.family == "inet")
        .filter_map(|a| a.local.parse().ok())
        .collect())
}

/// The first `10.234.N.0/24` none of `used` lies in.
fn free_subnet(used: &[Ipv4Addr]) -> Option<u8> {
    (0..=255u8).find(|n| {
        !used.iter().any(|a| {
            let o = a.octets();
            [o[0], o[1]] == POD_PREFIX && o[2] == *n
        })
    })
}

/// What `weft up` created on the host for one mesh, as recorded in `$WEFT_HOME` while it runs
/// (`meshes/NAME.pods.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetRecord {
    pub mesh: String,
    /// The `weft up` that created them.
    pub pid: u32,
    pub bridge: String,
    /// `10.234.N.0/24`.
    pub subnet: String,
    /// The bridge's address, the pods' default gateway.
    pub gateway: String,
    /// The namespaces of its pods.
    pub namespaces: Vec<String>,
}

fn record_path(home: &Path, mesh: &str) -> PathBuf {
    home.join("meshes").join(format!("{mesh}.pods.json"))
}

/// One replica's network namespace.
#[derive(Clone, Debug)]
pub struct Pod {
    /// The namespace's name (`weft-MESH-INSTANCE`).
    pub name: String,
    pub address: Ipv4Addr,
    /// The replica it holds.
    pub service: String,
    pub namespace: String,
    pub instance: String,
    /// When it was made, to tell the newest pod of an instance (a replacement runs beside the
    /// one it replaces).
    seq: u64,
}

struct State {
    pods: BTreeMap<String, Pod>,
    seq: u64,
    /// Set once everything was removed.
    torn_down: bool,
}

/// A mesh's bridge and pods. Dropping it removes them all (after the mesh's processes stopped).
pub struct Network {
    pub mesh: String,
    pub bridge: String,
    /// N of `10.234.N.0/24`.
    pub subnet: u8,
    record: PathBuf,
    state: Mutex<State>,
}

impl Network {
    /// Creates mesh `mesh`'s bridge on the first free pod subnet, and records it in `home`.
    pub fn create(mesh: &str, home: &Path) -> Result<Arc<Network>, PodError> {
        check_privileges()?;
        let bridge = bridge_name(mesh);
        // Two `weft up`s choosing at once would otherwise choose the same subnet.
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(SUBNET_LOCK)
            .map_err(|source| PodError::Io {
                path: SUBNET_LOCK.into(),
                source,
            })?;
        lock.lock().map_err(|source| PodError::Io {
            path: SUBNET_LOCK.into(),
            source,
        })?;
        if link_exists(&bridge) {
            return Err(PodError::BridgeExists {
                bridge,
                mesh: mesh.to_string(),
            });
        }
        let subnet = free_subnet(&host_addresses()?).ok_or(PodError::NoSubnet)?;
        let net = Arc::new(Network {
            mesh: mesh.to_string(),
            bridge: bridge.clone(),
            subnet,
            record: record_path(home, mesh),
            state: Mutex::new(State {
                pods: BTreeMap::new(),
                seq: 0,
                torn_down: false,
            }),
        });
        // Recorded before it exists, so that a crash in between leaves nothing unrecorded.
        net.write_record()?;
        run(&["ip", "link", "add", &bridge, "type", "bridge"])?;
        run(&["ip", "link", "set", &bridge, "up"])?;
        let host = gateway_link(&bridge);
        run(&[
            "ip", "link", "add", &host, "link", &bridge, "type", "macvlan", "mode", "bridge",
        ])?;
        let gateway = format!("{}/24", net.gateway());
        run(&["ip", "addr", "add", &gateway, "dev", &host])?;
        run(&["ip", "link", "set", &host, "up"])?;
        drop(lock);
        Ok(net)
    }

    /// The host's address in the mesh (on its macvlan of the bridge), as pods see it.
    pub fn gateway(&self) -> Ipv4Addr {
        subnet_addr(self.subnet, 1)
    }

    /// `10.234.N.0/24`.
    pub fn cidr(&self) -> String {
        format!("{}/24", subnet_addr(self.subnet, 0))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write_record(&self) -> Result<(), PodError> {
        let rec = NetRecord {
            mesh: self.mesh.clone(),
            pid: std::process::id(),
            bridge: self.bridge.clone(),
            subnet: self.cidr(),
            gateway: self.gateway().to_string(),
            namespaces: self.lock().pods.keys().cloned().collect(),
        };
        let io = |source| PodError::Io {
            path: self.record.clone(),
            source,
        };
        if let Some(dir) = self.record.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = self.record.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&rec).unwrap_or_default()).map_err(io)?;
        std::fs::rename(&tmp, &self.record).map_err(io)
    }

    /// The pods, newest last.
    pub fn pods(&self) -> Vec<Pod> {
        let mut pods: Vec<Pod> = self.lock().pods.values().cloned().collect();
        pods.sort_by_key(|p| p.seq);
        pods
    }

    /// Makes the pod of replica `instance` of `svc`: its namespace with `lo` up, a macvlan on
    /// the bridge as its `eth0` (with the next free address and a default route via the host's
    /// address), its hosts file naming `services`, and, when `capture` is given (a replica with
    /// a sidecar), the capture rules.
    pub fn add_pod(
        &self,
        svc: &ServiceSpec,
        instance: &str,
        services: &[ServiceSpec],
        capture: Option<&Capture>,
    ) -> Result<Pod, PodError> {
        let pod = {
            let mut st = self.lock();
            // A replacement runs beside the replica it replaces: it gets a name of its own.
            let base = netns_name(&self.mesh, instance);
            let mut name = base.clone();
            let mut k = 1;
            while st.pods.contains_key(&name) || Path::new("/run/netns").join(&name).exists() {
                name = format!("{base}-{k}");
                k += 1;
            }
            let taken: Vec<Ipv4Addr> = st.pods.values().map(|p| p.address).collect();
            let address = (FIRST_POD_HOST..=LAST_POD_HOST)
                .map(|h| subnet_addr(self.subnet, h))
                .find(|a| !taken.contains(a))
                .ok_or_else(|| PodError::NoAddress(self.cidr()))?;
            st.seq += 1;
            let pod = Pod {
                name,
                address,
                service: svc.name.clone(),
                namespace: svc.namespace.clone(),
                instance: instance.to_string(),
                seq: st.seq,
            };
            st.pods.insert(pod.name.clone(), pod.clone());
            pod
        };
        // Recorded before it exists, so that a crash in between leaves nothing unrecorded.
        self.write_record()?;
        match self.make_pod(&pod, services, capture) {
            Ok(()) => Ok(pod),
            Err(e) => {
                self.remove_pod(&pod.name);
                Err(e)
            }
        }
    }

    fn make_pod(
        &self,
        pod: &Pod,
        services: &[ServiceSpec],
        capture: Option<&Capture>,
    ) -> Result<(), PodError> {
        let ns = pod.name.as_str();
        write_hosts(pod, services)?;
        write_resolv_conf(pod)?;
        run(&["ip", "netns", "add", ns])?;
        run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        // Made in the pod's namespace, on the bridge in the host's: it goes with the namespace.
        run(&[
            "ip",
            "link",
            "add",
            "link",
            &self.bridge,
            "name",
            "eth0",
            "netns",
            ns,
            "type",
            "macvlan",
            "mode",
            "bridge",
        ])?;
        let address = format!("{}/24", pod.address);
        run(&["ip", "-n", ns, "addr", "add", &address, "dev", "eth0"])?;
        run(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
        let gateway = self.gateway().to_string();
        run(&["ip", "-n", ns, "route", "add", "default", "via", &gateway])?;
        if let Some(capture) = capture {
            let exempt = Exempt {
                mark: Some(SOCKET_MARK),
                hosts: vec![self.gateway()],
                ..Exempt::default()
            };
            tproxy::install(ns, &exempt, capture)?;
        }
        Ok(())
    }

    /// Removes pod `name`: the processes still in it, its namespace (and with it its macvlan)
    /// and its `/etc/netns` directory. Failures are reported, not returned: what remains is in
    /// the record, for `weft doctor`.
    pub fn remove_pod(&self, name: &str) {
        for line in remove_netns(name) {
            crate::output::line(format!("weft: pod {name}: {line}"));
        }
        self.lock().pods.remove(name);
        let _ = self.write_record();
    }

    /// Rewrites every pod's hosts file for `services` (in place: `ip netns exec` bind-mounts
    /// the file, so it must stay the same inode).
    pub fn write_hosts(&self, services: &[ServiceSpec]) {
        for pod in self.pods() {
            if let Err(e) = write_hosts(&pod, services) {
                crate::output::line(format!("weft: pod {}: {e}", pod.name));
            }
        }
    }

    /// Removes every pod, then the bridge (and with it the host's macvlan on it) and the record.
    /// Once only.
    pub fn teardown(&self) {
        if std::mem::replace(&mut self.lock().torn_down, true) {
            return;
        }
        for pod in self.pods() {
            self.remove_pod(&pod.name);
        }
        if link_exists(&self.bridge) {
            if let Err(e) = run(&["ip", "link", "del", &self.bridge]) {
                crate::output::line(format!("weft: {e}"));
            }
        }
        let _ = std::fs::remove_file(&self.record);
    }

    /// What `weft up` reports it created.
    pub fn describe(&self) -> String {
        let n = self.lock().pods.len();
        format!(
            "bridge {} ({}, host {}), {n} network namespace{} ({NETNS_PREFIX}{}-*)",
            self.bridge,
            self.cidr(),
            self.gateway(),
            if n == 1 { "" } else { "s" },
            self.mesh
        )
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Whose outbound connections the capture rules let pass: the sidecar's own, told apart by
/// their socket mark (`weft up`'s pods: [`SOCKET_MARK`]) or by the proxy's user id (Kubernetes
/// pods, as Istio's), and connections to `hosts` (the control plane).
#[derive(Clone, Debug, Default)]
pub struct Exempt {
    pub mark: Option<u32>,
    pub uid: Option<u32>,
    pub hosts: Vec<Ipv4Addr>,
}

/// The `nat` table rules (for `iptables-restore --noflush`) that send a Kubernetes pod's TCP
/// through its sidecar (`weft capture`), as Istio's `istio-iptables` writes them: inbound connections to any port but the
/// sidecar's own and the excluded ones go to [`INBOUND_PORT`]; outbound connections go to
/// [`CAPTURE_PORT`] unless they are `exempt`, stay in the pod or are excluded by port or CIDR;
/// with `include_outbound_cidrs`, only connections to those are captured.
pub fn capture_rules(exempt: &Exempt, capture: &Capture) -> String {
    let mut r = String::from("*nat\n:WEFT_INBOUND - [0:0]\n:WEFT_OUTPUT - [0:0]\n");
    r.push_str("-A PREROUTING -p tcp -j WEFT_INBOUND\n");
    r.push_str("-A OUTPUT -p tcp -j WEFT_OUTPUT\n");
    for port in [INBOUND_PORT, ADMIN_PORT]
        .into_iter()
        .chain(capture.exclude_inbound_ports.iter().copied())
    {
        let _ = writeln!(r, "-A WEFT_INBOUND -p tcp --dport {port} -j RETURN");
    }
    let _ = writeln!(
        r,
        "-A WEFT_INBOUND -p tcp -j REDIRECT --to-ports {INBOUND_PORT}"
    );
    if let Some(mark) = exempt.mark {
        let _ = writeln!(r, "-A WEFT_OUTPUT -m mark --mark {mark} -j RETURN");
    }
    if let Some(uid) = exempt.uid {
        let _ = writeln!(r, "-A WEFT_OUTPUT -m owner --uid-owner {uid} -j RETURN");
    }
    r.push_str("-A WEFT_OUTPUT -o lo -j RETURN\n");
    for host in &exempt.hosts {
        let _ = writeln!(r, "-A WEFT_OUTPUT -d {host}/32 -j RETURN");
    }
    for port in &capture.exclude_outbound_ports {
        let _ = writeln!(r, "-A WEFT_OUTPUT -p tcp --dport {port} -j RETURN");
    }
    for cidr in &capture.exclude_outbound_cidrs {
        let _ = writeln!(r, "-A WEFT_OUTPUT -d {cidr} -j RETURN");
    }
    let redirect = format!("-j REDIRECT --to-ports {CAPTURE_PORT}");
    if capture.include_outbound_cidrs.is_empty() {
        let _ = writeln!(r, "-A WEFT_OUTPUT -p tcp {redirect}");
    } else {
        for cidr in &capture.include_outbound_cidrs {
            let _ = writeln!(r, "-A WEFT_OUTPUT -d {cidr} -p tcp {redirect}");
        }
        r.push_str("-A WEFT_OUTPUT -j RETURN\n");
    }
    r.push_str("COMMIT\n");
    r
}

/// The hosts file of `pod`: localhost, the pod's own names, and every service of `services`
/// at its virtual IP as `NAME.NAMESPACE`, `NAME.NAMESPACE.svc`,
/// `NAME.NAMESPACE.svc.cluster.local`, and bare `NAME` for services in the pod's namespace.
pub fn hosts_file(pod: &Pod, services: &[ServiceSpec]) -> String {
    let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost\n");
    let _ = writeln!(out, "{}\t{} {}", pod.address, pod.instance, pod.name);
    let keys: Vec<model::ServiceKey> = services.iter().map(|s| s.key()).collect();
    for (key, vip) in model::mesh::service_vips(&keys) {
        let (name, ns) = (&key.name, &key.namespace);
        let _ = write!(
            out,
            "{vip}\t{name}.{ns} {name}.{ns}.svc {name}.{ns}.svc.cluster.local"
        );
        if *ns == pod.namespace {
            let _ = write!(out, " {name}");
        }
        out.push('\n');
    }
    out
}

/// Writes `pod`'s hosts file, truncating the one there (same inode, which a running
/// `ip netns exec` has bind-mounted over `/etc/hosts`).
fn write_hosts(pod: &Pod, services: &[ServiceSpec]) -> Result<(), PodError> {
    let dir = Path::new(ETC_NETNS).join(&pod.name);
    let path = dir.join("hosts");
    let io = |source| PodError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .map_err(io)?;
    std::io::Write::write_all(&mut f, hosts_file(pod, services).as_bytes()).map_err(io)
}

/// A pod's `resolv.conf`: the mesh's search domains for its namespace, and a name server on
/// the pod's loopback where nothing listens. Pods have no DNS server to reach (the host's
/// would be past the bridge, which does not forward): a lookup of a name the hosts file lacks
/// then fails at once instead of timing out, and resolvers that ask DNS before the hosts file
/// (gRPC's c-ares) fall back to it at once (measured: a grpcio client's first call in a pod
/// took 12.8 s with the host's resolv.conf, 0.65 s with this one).
pub fn resolv_conf(pod: &Pod) -> String {
    let ns = &pod.namespace;
    format!(
        "nameserver 127.0.0.1\nsearch {ns}.svc.cluster.local svc.cluster.local cluster.local\noptions timeout:1 attempts:1\n"
    )
}

fn write_resolv_conf(pod: &Pod) -> Result<(), PodError> {
    let path = Path::new(ETC_NETNS).join(&pod.name).join("resolv.conf");
    std::fs::write(&path, resolv_conf(pod)).map_err(|source| PodError::Io { path, source })
}

/// The namespaces `ip netns list` shows.
pub fn list_netns() -> Vec<String> {
    run(&["ip", "netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The processes in namespace `ns`.
pub fn netns_pids(ns: &str) -> Vec<i32> {
    run(&["ip", "netns", "pids", ns])
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Removes namespace `ns` and what goes with it: the processes still in it (SIGKILL; only
/// those), the host end of a veth a pod of an earlier weft had, the namespace (its macvlan goes
/// with it), its `/etc/netns` directory. What failed, one line each.
fn remove_netns(ns: &str) -> Vec<String> {
    let mut failed = Vec::new();
    let exists = Path::new("/run/netns").join(ns).exists();
    if exists {
        for pid in netns_pids(ns) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    // Deleting one end of a veth deletes both, now rather than when the kernel frees the
    // namespace.
    let veth = veth_name(ns);
    if link_exists(&veth) {
        if let Err(e) = run(&["ip", "link", "del", &veth]) {
            failed.push(e.to_string());
        }
    }
    if exists {
        if let Err(e) = run(&["ip", "netns", "del", ns]) {
            failed.push(e.to_string());
        }
    }
    let dir = Path::new(ETC_NETNS).join(ns);
    if dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            failed.push(format!("{}: {e}", dir.display()));
        }
    }
    failed
}

/// The index (in the host's namespace) of the link namespace `ns`'s `eth0` is stacked on: for a
/// pod, the bridge its macvlan belongs to (`ip -o link` prints `N: eth0@ifINDEX: …`).
fn eth0_lower(ns: &str) -> Option<u32> {
    let out = run(&["ip", "-n", ns, "-o", "link", "show", "eth0"]).ok()?;
    let (_, rest) = out.split_once("eth0@if")?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// The links of the host whose names start with `prefix`.
fn links_named(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// The records in `home` of meshes whose `weft up` is no longer running.
fn dead_records(home: &Path) -> Vec<(PathBuf, NetRecord)> {
    let Ok(entries) = std::fs::read_dir(home.join("meshes")) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, NetRecord)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".pods.json"))
        .filter_map(|p| {
            let rec: NetRecord = serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
            (!alive(rec.pid)).then_some((p, rec))
        })
        .collect();
    out.sort_by(|a, b| a.1.mesh.cmp(&b.1.mesh));
    out
}

/// The records in `home` of meshes still running.
fn live_records(home: &Path) -> Vec<NetRecord> {
    let Ok(entries) = std::fs::read_dir(home.join("meshes")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".pods.json"))
        .filter_map(|p| serde_json::from_slice::<NetRecord>(&std::fs::read(&p).ok()?).ok())
        .filter(|r| alive(r.pid))
        .collect()
}

/// Removes what `weft up`s recorded in `home` left when they died (SIGKILL, a crash): their
/// pods (and the processes still in them), `/etc/netns` directories and bridges. One line per
/// mesh cleaned, saying what was removed.
pub fn clean_dead(home: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for (path, rec) in dead_records(home) {
        let mut removed = Vec::new();
        let mut failed = Vec::new();
        for ns in &rec.namespaces {
            let was =
                Path::new("/run/netns").join(ns).exists() || Path::new(ETC_NETNS).join(ns).exists();
            let pids = netns_pids(ns).len();
            let errors = remove_netns(ns);
            if was {
                removed.push(match pids {
                    0 => format!("namespace {ns}"),
                    n => format!("namespace {ns} ({n} processes killed)"),
                });
            }
            failed.extend(errors);
        }
        if link_exists(&rec.bridge) {
            match run(&["ip", "link", "del", &rec.bridge]) {
                Ok(_) => removed.push(format!("bridge {} ({})", rec.bridge, rec.subnet)),
                Err(e) => failed.push(e.to_string()),
            }
        }
        if failed.is_empty() {
            let _ = std::fs::remove_file(&path);
        }
        if !removed.is_empty() || !failed.is_empty() {
            let mut line = format!(
                "weft: removed leftovers of mesh {} (weft up pid {} is gone): {}",
                rec.mesh,
                rec.pid,
                if removed.is_empty() {
                    "nothing".to_string()
                } else {
                    removed.join(", ")
                }
            );
            if !failed.is_empty() {
                let _ = write!(line, "; could not remove: {}", failed.join("; "));
            }
            lines.push(line);
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
    lines
}

/// Something of weft's on the host that no running mesh owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leftover {
    /// A namespace (and the `/etc/netns` directory beside it); `mesh`: the dead mesh whose
    /// record lists it, if one in this `$WEFT_HOME` does.
    Netns {
        name: String,
        mesh: Option<String>,
        processes: usize,
    },
    /// An `/etc/netns/weft-*` directory without its namespace.
    EtcDir { name: String },
    /// A bridge of no running mesh with nothing attached but leftover pods.
    Bridge { name: String, mesh: Option<String> },
}

impl Leftover {
    /// Whether it is mesh `mesh`'s: recorded so, or named so (a pod's namespace, a bridge).
    pub fn of_mesh(&self, mesh: &str) -> bool {
        let pod_of = |name: &str| name.starts_with(&format!("{NETNS_PREFIX}{mesh}-"));
        match self {
            Leftover::Netns { name, mesh: m, .. } => match m {
                Some(m) => m == mesh,
                None => pod_of(name),
            },
            Leftover::EtcDir { name } => pod_of(name),
            Leftover::Bridge { name, .. } => *name == bridge_name(mesh),
        }
    }
}

impl std::fmt::Display for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let of = |mesh: &Option<String>| match mesh {
            Some(m) => format!("of mesh {m}, whose weft up is gone"),
            None => "recorded by no mesh in this WEFT_HOME".to_string(),
        };
        match self {
            Leftover::Netns {
                name,
                mesh,
                processes,
            } => write!(
                f,
                "namespace {name} ({}; {processes} processes in it)",
                of(mesh)
            ),
            Leftover::EtcDir { name } => {
                write!(f, "{ETC_NETNS}/{name} (its namespace is gone)")
            }
            Leftover::Bridge { name, mesh } => {
                write!(f, "bridge {name} ({}; no running pod on it)", of(mesh))
            }
        }
    }
}

/// What weft left on the host that no running mesh owns. Namespaces recorded by a dead mesh in
/// `home`, and `weft-*` namespaces no record claims that hold no process (a mesh of another
/// `$WEFT_HOME` always has processes in its pods); `/etc/netns/weft-*` directories without a
/// namespace; `wft*` bridges of no running mesh that no running pod's macvlan belongs to, with
/// nothing attached but those leftover pods.
/// Pods come before bridges, which [`remove`] then finds empty.
pub fn leftovers(home: &Path) -> Vec<Leftover> {
    let dead = dead_records(home);
    let live = live_records(home);
    let owner = |ns: &str| {
        dead.iter()
            .find(|(_, r)| r.namespaces.iter().any(|n| n == ns))
            .map(|(_, r)| r.mesh.clone())
    };
    let in_live = |ns: &str| live.iter().any(|r| r.namespaces.iter().any(|n| n == ns));
    let namespaces = list_netns();
    let mut out = Vec::new();
    for ns in namespaces.iter().filter(|n| n.starts_with(NETNS_PREFIX)) {
        if in_live(ns) {
            continue;
        }
        let processes = netns_pids(ns).len();
        let mesh = owner(ns);
        if mesh.is_some() || processes == 0 {
            out.push(Leftover::Netns {
                name: ns.clone(),
                mesh,
                processes,
            });
        }
    }
    if let Ok(dirs) = std::fs::read_dir(ETC_NETNS) {
        let mut names: Vec<String> = dirs
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(NETNS_PREFIX) && !namespaces.contains(n))
            .filter(|n| !in_live(n))
            .collect();
        names.sort();
        out.extend(names.into_iter().map(|name| Leftover::EtcDir { name }));
    }
    // The running pods (`weft-*` namespaces not listed as leftovers), and what each one's eth0
    // is stacked on: asked once, and only when there is a bridge to look at.
    let running: Vec<String> = namespaces
        .iter()
        .filter(|ns| ns.starts_with(NETNS_PREFIX))
        .filter(|ns| {
            !out.iter()
                .any(|l| matches!(l, Leftover::Netns { name, .. } if name == *ns))
        })
        .cloned()
        .collect();
    let mut lowers: Option<Vec<u32>> = None;
    let mut bridges = links_named(BRIDGE_PREFIX);
    bridges.sort();
    for name in bridges {
        if live.iter().any(|r| r.bridge == name) {
            continue;
        }
        // A running pod on it: a namespace of weft's with processes (a mesh of another
        // WEFT_HOME, whose record this one does not see) whose eth0 is a macvlan of it.
        let index =
            std::fs::read_to_string(Path::new("/sys/class/net").join(&name).join("ifindex"))
                .ok()
                .and_then(|i| i.trim().parse::<u32>().ok());
        let running_pod = index.is_some_and(|index| {
            lowers
                .get_or_insert_with(|| running.iter().filter_map(|ns| eth0_lower(ns)).collect())
                .contains(&index)
        });
        if running_pod {
            continue;
        }
        // What is attached to it, but the veths of the leftover pods listed above (which go
        // with them).
        let leftover_veths: Vec<String> = out
            .iter()
            .filter_map(|l| match l {
                Leftover::Netns { name, .. } => Some(veth_name(name)),
                _ => None,
            })
            .collect();
        let attached = Path::new("/sys/class/net")
            .join(&name)
            .join("brif")
            .read_dir()
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|link| !leftover_veths.contains(link))
                    .count()
            })
            .unwrap_or(0);
        let mesh = dead
            .iter()
            .find(|(_, r)| r.bridge == name)
            .map(|(_, r)| r.mesh.clone());
        if attached == 0 || mesh.is_some() {
            out.push(Leftover::Bridge { name, mesh });
        }
    }
    out
}

/// Removes `leftover`; what failed, if anything.
pub fn remove(leftover: &Leftover) -> Result<(), String> {
    let failed = match leftover {
        Leftover::Netns { name, .. } | Leftover::EtcDir { name } => remove_netns(name),
        Leftover::Bridge { name, .. } => run(&["ip", "link", "del", name])
            .err()
            .map(|e| e.to_string())
            .into_iter()
            .collect(),
    };
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// After [`remove`]ing leftovers: drops the records of dead meshes in `home` whose pods and
/// bridge are all gone.
pub fn forget_cleaned(home: &Path) {
    for (path, rec) in dead_records(home) {
        let gone = rec
            .namespaces
            .iter()
            .all(|ns| !Path::new("/run/netns").join(ns).exists())
            && !link_exists(&rec.bridge);
        if gone {
            let _ = std::fs::remove_file(path);
        }
    }
}

pub mod tproxy;

#[cfg(test)]
mod tests;
