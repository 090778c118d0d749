//! A real Redis Cluster for tests: 3 masters and 3 replicas
//! (`redis-server --cluster-enabled yes` ×6 on free loopback ports, joined by
//! `redis-cli --cluster create … --cluster-replicas 1`), killed and its files
//! removed on drop. Used by the store conformance suite (hub) and the
//! end-to-end tests (tests/).
//!
//! Each node also listens on its port + 10000 (the cluster bus), so a port is
//! picked only when both are free. Nodes time out after 1 s, so a killed
//! master's replica is promoted within a few seconds, and the cluster keeps
//! serving the slots it still covers (`cluster-require-full-coverage no`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

/// How long the cluster may take to form, or to recover after a fault.
const PATIENCE: Duration = Duration::from_secs(30);
/// How often a wait checks again.
const POLL: Duration = Duration::from_millis(50);

/// One `redis-server` of the cluster.
struct Node {
    port: u16,
    child: Option<Child>,
}

/// A running 6-node cluster (3 masters, 3 replicas).
pub struct TestCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

impl TestCluster {
    /// Starts six nodes, creates the cluster and waits until every node says
    /// `cluster_state:ok` and every replica is in sync with its master.
    pub async fn spawn() -> Result<Self> {
        // A port free when probed may be taken before redis binds it: a node
        // that exits at start makes the nodes start again on other ports.
        for _ in 0..5 {
            if let Some(cluster) = Self::start().await? {
                return Ok(cluster);
            }
        }
        bail!("a redis-server exited at start five times in a row")
    }

    /// [`TestCluster::spawn`]'s attempt on one set of ports; `None` when a
    /// node exited at start.
    async fn start() -> Result<Option<Self>> {
        let dir = std::env::temp_dir().join(format!(
            "exechub-cluster-{}-{}",
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(&dir)?;
        let mut cluster = Self {
            nodes: Vec::new(),
            dir,
        };
        for port in cluster_ports(6)? {
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--cluster-node-timeout", "1000"])
                .args(["--cluster-require-full-coverage", "no"])
                .args(["--appendonly", "yes", "--appendfsync", "always"])
                .args(["--appendfilename", &format!("appendonly-{port}.aof")])
                .args(["--appenddirname", &format!("aof-{port}")])
                .args(["--dbfilename", &format!("dump-{port}.rdb"), "--save", ""])
                .arg("--dir")
                .arg(&cluster.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context(
                    "redis-server not found: install it with `apt-get install redis-server`",
                )?;
            cluster.nodes.push(Node {
                port,
                child: Some(child),
            });
        }
        for node in &mut cluster.nodes {
            let port = node.port;
            let mut exited = false;
            poll("redis-server to answer PING", || {
                exited = node
                    .child
                    .as_mut()
                    .map_or(Ok(None), Child::try_wait)?
                    .is_some();
                Ok(exited || query(port, &["PING"]).is_ok())
            })
            .await?;
            if exited {
                return Ok(None);
            }
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let create = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .context("redis-cli not found: install it with `apt-get install redis-server`")?;
        ensure!(
            create.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&create.stdout)
        );
        cluster.wait_healthy().await?;
        Ok(Some(cluster))
    }

    /// The seed node URLs, comma-separated, for `--redis-cluster`.
    pub fn seeds(&self) -> String {
        self.urls().join(",")
    }

    /// Every node's URL.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// The ports of the running nodes.
    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// The process id of the node on `port`.
    pub fn pid(&self, port: u16) -> Result<u32> {
        self.node(port)?
            .child
            .as_ref()
            .map(Child::id)
            .context("the node is not running")
    }

    /// Waits until every running node says `cluster_state:ok`, knows the
    /// same masters, and every replica's link to its master is up.
    pub async fn wait_healthy(&self) -> Result<()> {
        let ports = self.live_ports();
        poll("the cluster to be ok on every node", || {
            let mut masters = None;
            for port in &ports {
                let Ok(info) = query(*port, &["CLUSTER", "INFO"]) else {
                    return Ok(false);
                };
                if !info.contains("cluster_state:ok") {
                    return Ok(false);
                }
                let Ok(seen) = self.masters_seen_by(*port) else {
                    return Ok(false);
                };
                if masters.get_or_insert_with(|| seen.clone()) != &seen {
                    return Ok(false);
                }
                let Ok(replication) = query(*port, &["INFO", "replication"]) else {
                    return Ok(false);
                };
                if replication.contains("role:slave")
                    && !replication.contains("master_link_status:up")
                {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await
    }

    /// The masters' ports.
    pub fn masters(&self) -> Result<Vec<u16>> {
        let port = *self.live_ports().first().context("no node is running")?;
        self.masters_seen_by(port)
    }

    /// The hash slot of `key`.
    pub fn slot(&self, key: &str) -> Result<u16> {
        let port = *self.live_ports().first().context("no node is running")?;
        Ok(query(port, &["CLUSTER", "KEYSLOT", key])?.trim().parse()?)
    }

    /// The port of the master serving `slot`.
    pub fn master_of_slot(&self, slot: u16) -> Result<u16> {
        let port = *self.live_ports().first().context("no node is running")?;
        let value = query_value(port, &["CLUSTER", "SLOTS"])?;
        for range in as_array(&value)? {
            let fields = as_array(range)?;
            let (start, end) = (as_int(&fields[0])?, as_int(&fields[1])?);
            if (start..=end).contains(&i64::from(slot)) {
                let master = as_array(&fields[2])?;
                return Ok(u16::try_from(as_int(&master[1])?)?);
            }
        }
        bail!("slot {slot} is not served")
    }

    /// The port of the master serving execution `id`'s keys.
    pub fn master_of(&self, id: &str) -> Result<u16> {
        self.master_of_slot(self.slot(&format!("execution:{id}:events"))?)
    }

    /// Execution ids `{prefix}-<n>`, `per_master` of them on each master.
    pub fn ids_on_every_master(&self, prefix: &str, per_master: usize) -> Result<Vec<String>> {
        let masters = self.masters()?;
        let mut ids = Vec::new();
        for master in &masters {
            let mut n = 0;
            let mut found = 0;
            while found < per_master {
                let id = format!("{prefix}-{}-{}-{n}", std::process::id(), unique());
                n += 1;
                if self.master_of(&id)? == *master {
                    ids.push(id);
                    found += 1;
                }
            }
        }
        Ok(ids)
    }

    /// The replica of the master on `port`.
    pub fn replica_of(&self, port: u16) -> Result<u16> {
        let id = query(port, &["CLUSTER", "MYID"])?.trim().to_owned();
        for other in self.live_ports() {
            let info = query(other, &["INFO", "replication"])?;
            if info.contains("role:slave") && info.contains(&format!("master_port:{port}")) {
                return Ok(other);
            }
        }
        bail!("master {port} ({id}) has no replica")
    }

    /// SIGKILLs the node on `port` (its replica takes over after the node timeout).
    pub fn kill(&mut self, port: u16) -> Result<()> {
        let node = self.node_mut(port)?;
        let mut child = node.child.take().context("the node is not running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Moves `slot` from the master on `from` to the master on `to` by hand
    /// (`CLUSTER SETSLOT … IMPORTING/MIGRATING`, `MIGRATE` of its keys, then
    /// `SETSLOT … NODE` on every master), as `redis-cli --cluster reshard` does.
    pub fn migrate_slot(&self, slot: u16, from: u16, to: u16) -> Result<()> {
        self.begin_migration(slot, from, to)?;
        while self.migrate_keys(slot, from, to, 100)? > 0 {}
        self.finish_migration(slot, from, to)
    }

    /// Marks `slot` as migrating from `from` and importing to `to`: its keys
    /// stay where they are, new ones are asked for on `to` (`ASK`).
    pub fn begin_migration(&self, slot: u16, from: u16, to: u16) -> Result<()> {
        let slot = slot.to_string();
        query(
            to,
            &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &node_id(from)?],
        )?;
        query(
            from,
            &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &node_id(to)?],
        )?;
        Ok(())
    }

    /// `MIGRATE`s up to `count` of the slot's keys from `from` to `to`;
    /// returns how many moved (0: none left).
    pub fn migrate_keys(&self, slot: u16, from: u16, to: u16, count: usize) -> Result<usize> {
        let (slot, count) = (slot.to_string(), count.to_string());
        let keys = query_value(from, &["CLUSTER", "GETKEYSINSLOT", &slot, &count])?;
        let keys: Vec<String> = redis::from_redis_value(keys)?;
        if !keys.is_empty() {
            let to_port = to.to_string();
            let mut migrate = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
            migrate.extend(keys.iter().map(String::as_str));
            query(from, &migrate)?;
        }
        Ok(keys.len())
    }

    /// Gives `slot` to `to` on every master: the new owner first, then the
    /// old one (which then ends its shard channels' subscriptions), then the rest.
    pub fn finish_migration(&self, slot: u16, from: u16, to: u16) -> Result<()> {
        let (slot, to_id) = (slot.to_string(), node_id(to)?);
        query(to, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id])?;
        query(from, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id])?;
        for master in self.masters()? {
            if master != from && master != to {
                query(master, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id])?;
            }
        }
        Ok(())
    }

    /// The sharded channels a node has subscribers for (`PUBSUB SHARDCHANNELS`).
    pub fn shard_channels(&self, port: u16) -> Result<Vec<String>> {
        Ok(redis::from_redis_value(query_value(
            port,
            &["PUBSUB", "SHARDCHANNELS"],
        )?)?)
    }

    /// Runs one command on the node on `port` and returns its reply as text.
    pub fn query(&self, port: u16, args: &[&str]) -> Result<String> {
        query(port, args)
    }

    fn masters_seen_by(&self, port: u16) -> Result<Vec<u16>> {
        let value = query_value(port, &["CLUSTER", "SLOTS"])?;
        let mut masters = Vec::new();
        for range in as_array(&value)? {
            let fields = as_array(range)?;
            let master = as_array(&fields[2])?;
            masters.push(u16::try_from(as_int(&master[1])?)?);
        }
        masters.sort_unstable();
        masters.dedup();
        Ok(masters)
    }

    fn node(&self, port: u16) -> Result<&Node> {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .context("no such node")
    }

    fn node_mut(&mut self, port: u16) -> Result<&mut Node> {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .context("no such node")
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `ready` until it says so, failing after [`PATIENCE`].
async fn poll(what: &str, mut ready: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if ready()? {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(POLL).await; // poll interval
    }
}

fn node_id(port: u16) -> Result<String> {
    Ok(query(port, &["CLUSTER", "MYID"])?.trim().to_owned())
}

fn connection(port: u16) -> Result<redis::Connection> {
    Ok(redis::Client::open(format!("redis://127.0.0.1:{port}"))?
        .get_connection_with_timeout(Duration::from_millis(500))?)
}

fn query_value(port: u16, args: &[&str]) -> Result<redis::Value> {
    let mut connection = connection(port)?;
    connection.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    Ok(command.query(&mut connection)?)
}

fn query(port: u16, args: &[&str]) -> Result<String> {
    Ok(match query_value(port, args)? {
        redis::Value::Okay => "OK".to_owned(),
        redis::Value::Int(n) => n.to_string(),
        other => redis::from_redis_value(other)?,
    })
}

fn as_array(value: &redis::Value) -> Result<&[redis::Value]> {
    match value {
        redis::Value::Array(items) => Ok(items),
        other => bail!("expected an array, got {other:?}"),
    }
}

fn as_int(value: &redis::Value) -> Result<i64> {
    match value {
        redis::Value::Int(n) => Ok(*n),
        other => bail!("expected an integer, got {other:?}"),
    }
}

/// A number no other call in this process gets.
fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// `count` ports that were free a moment ago, each with its cluster bus
/// port (+10000) free and below 65536.
fn cluster_ports(count: usize) -> Result<Vec<u16>> {
    let mut ports: Vec<u16> = Vec::new();
    for _ in 0..1000 {
        if ports.len() == count {
            break;
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let Some(bus) = port.checked_add(10_000) else {
            continue;
        };
        if ports.contains(&port) || ports.contains(&bus) || ports.iter().any(|p| p + 10_000 == port)
        {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", bus)).is_ok() {
            ports.push(port);
        }
    }
    ensure!(ports.len() == count, "no {count} free cluster ports");
    Ok(ports)
}
