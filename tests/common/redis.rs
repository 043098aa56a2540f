//! A real redis-server on a free loopback port, started and stopped by the test.
//!
//! When the binary is missing the Redis tests skip with a printed reason, unless
//! PORTCULLIS_REQUIRE_REDIS=1 (as CI sets), which turns the skip into a failure.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts redis-server, or returns `None` (after saying why) when it is not installed.
    pub fn start() -> Option<RedisServer> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            let required = std::env::var("PORTCULLIS_REQUIRE_REDIS").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "PORTCULLIS_REQUIRE_REDIS=1 but redis-server is not installed"
            );
            println!(
                "SKIPPED: redis-server is not installed (apt-get install -y redis-server to run this test)"
            );
            return None;
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut server = RedisServer {
            port,
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        server.run();
        Some(server)
    }

    fn run(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (an outage).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: nothing is saved).
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` (or sentinel) process on `port` with `args`, waited for until it listens.
fn spawn(port: u16, args: &[String]) -> Child {
    let child = Command::new("redis-server")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server on {port} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// `redis-cli -p port args...`, its output.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether redis-server and redis-cli are installed; says why not (or fails under
/// PORTCULLIS_REQUIRE_REDIS=1) when they are not.
fn installed() -> bool {
    let ok = ["redis-server", "redis-cli"].iter().all(|bin| {
        Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !ok {
        let required = std::env::var("PORTCULLIS_REQUIRE_REDIS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "PORTCULLIS_REQUIRE_REDIS=1 but redis-server is not installed"
        );
        println!(
            "SKIPPED: redis-server/redis-cli are not installed (apt-get install -y redis-server)"
        );
    }
    ok
}

/// A real 6-node Redis Cluster on loopback: 3 masters, each with a replica, node timeout 1 s.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<Option<Child>>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub fn start() -> Option<RedisCluster> {
        if !installed() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
        let children = ports
            .iter()
            .map(|&port| {
                let node_dir = dir.path().join(port.to_string());
                std::fs::create_dir(&node_dir).unwrap();
                Some(spawn(
                    port,
                    &[
                        "--port".into(),
                        port.to_string(),
                        "--bind".into(),
                        "127.0.0.1".into(),
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-node-timeout".into(),
                        "1000".into(),
                        // A replica fails over however long its link has been down.
                        "--cluster-replica-validity-factor".into(),
                        "0".into(),
                        "--save".into(),
                        String::new(),
                        "--appendonly".into(),
                        "no".into(),
                        "--dir".into(),
                        node_dir.display().to_string(),
                    ],
                ))
            })
            .collect();
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(out.status.success(), "redis-cli --cluster create failed");
        let cluster = RedisCluster {
            ports,
            children,
            _dir: dir,
        };
        cluster.wait_ok();
        // A replica that never synced cannot take over: wait for every link.
        let deadline = Instant::now() + Duration::from_secs(20);
        for &port in &cluster.ports {
            loop {
                let info = cli(port, &["info", "replication"]);
                if info.contains("role:master") || info.contains("master_link_status:up") {
                    break;
                }
                assert!(Instant::now() < deadline, "a replica never synced");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Some(cluster)
    }

    /// Waits until every live node says `cluster_state:ok`.
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = self
                .ports
                .iter()
                .zip(&self.children)
                .filter(|(_, c)| c.is_some())
                .all(|(&p, _)| cli(p, &["cluster", "info"]).contains("cluster_state:ok"));
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster never became ok");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The URLs of the first three nodes, comma-separated (the rest are discovered).
    pub fn urls(&self) -> String {
        self.ports[..3]
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port of the master that holds `key`'s slot.
    pub fn master_of(&self, key: &str) -> u16 {
        let live = self
            .ports
            .iter()
            .zip(&self.children)
            .find(|(_, c)| c.is_some())
            .map(|(&p, _)| p)
            .unwrap();
        self.master_of_via(live, key)
            .unwrap_or_else(|| panic!("no master holds the slot of {key}"))
    }

    fn master_of_via(&self, port: u16, key: &str) -> Option<u16> {
        let slot: u16 = cli(port, &["cluster", "keyslot", key])
            .trim()
            .parse()
            .unwrap();
        for line in cli(port, &["cluster", "nodes"]).lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            for range in &fields[8..] {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(lo), Ok(hi)) = (lo.parse::<u16>(), hi.parse::<u16>())
                    && (lo..=hi).contains(&slot)
                {
                    let addr = fields[1].split('@').next().unwrap();
                    return addr.rsplit(':').next().unwrap().parse().ok();
                }
            }
        }
        None
    }

    /// Waits until `key`'s slot is served by a master other than `dead`, and the cluster is ok.
    pub fn wait_failover(&self, key: &str, dead: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let live = self.ports.iter().copied().find(|&p| p != dead).unwrap();
            let nodes = cli(live, &["cluster", "nodes"]);
            let failed = nodes.lines().any(|l| {
                l.contains(&format!(":{dead}@")) && l.contains("fail") && !l.contains("fail?")
            });
            if failed && self.master_of_via(live, key).is_some_and(|p| p != dead) {
                break;
            }
            assert!(Instant::now() < deadline, "the cluster never failed over");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.wait_ok();
    }

    /// Kills the node on `port` (SIGKILL: no goodbye to the cluster).
    pub fn kill(&mut self, port: u16) {
        let i = self.ports.iter().position(|&p| p == port).unwrap();
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A master, its replica and three sentinels (quorum 2, down after 1 s) on loopback.
pub struct RedisSentinel {
    pub master_port: u16,
    pub replica_port: u16,
    pub sentinel_ports: Vec<u16>,
    master: Option<Child>,
    others: Vec<Child>,
    _dir: tempfile::TempDir,
}

/// The master name the sentinels watch.
pub const SENTINEL_MASTER: &str = "portcullis-test";

impl RedisSentinel {
    pub fn start() -> Option<RedisSentinel> {
        if !installed() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let (master_port, replica_port) = (free_port(), free_port());
        let base = |port: u16| -> Vec<String> {
            vec![
                "--port".into(),
                port.to_string(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--save".into(),
                String::new(),
                "--appendonly".into(),
                "no".into(),
                "--dir".into(),
                dir.path().display().to_string(),
                "--dbfilename".into(),
                format!("dump-{port}.rdb"),
            ]
        };
        let master = spawn(master_port, &base(master_port));
        let mut replica_args = base(replica_port);
        replica_args.extend([
            "--replicaof".into(),
            "127.0.0.1".into(),
            master_port.to_string(),
        ]);
        let mut others = vec![spawn(replica_port, &replica_args)];
        // The replica must be in sync before the sentinels can promote it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cli(replica_port, &["info", "replication"]).contains("master_link_status:up") {
            assert!(Instant::now() < deadline, "the replica never synced");
            std::thread::sleep(Duration::from_millis(50));
        }
        let sentinel_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        for &port in &sentinel_ports {
            let conf = dir.path().join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
                     sentinel failover-timeout {SENTINEL_MASTER} 5000\n",
                    dir.path().display()
                ),
            )
            .unwrap();
            others.push(spawn(
                port,
                &[conf.display().to_string(), "--sentinel".into()],
            ));
        }
        // Every sentinel must know the replica (learnt from the master's INFO) and the others.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !sentinel_ports.iter().all(|&p| {
            let master = cli(p, &["sentinel", "master", SENTINEL_MASTER]);
            master.contains("num-slaves\n1") && master.contains("num-other-sentinels\n2")
        }) {
            assert!(
                Instant::now() < deadline,
                "the sentinels never saw the whole set"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(RedisSentinel {
            master_port,
            replica_port,
            sentinel_ports,
            master: Some(master),
            others,
            _dir: dir,
        })
    }

    /// The sentinels' URLs, comma-separated.
    pub fn urls(&self) -> String {
        self.sentinel_ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The master's port as the sentinels name it now.
    pub fn current_master(&self) -> u16 {
        let out = cli(
            self.sentinel_ports[0],
            &["sentinel", "get-master-addr-by-name", SENTINEL_MASTER],
        );
        out.lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Kills the master (SIGKILL).
    pub fn kill_master(&mut self) {
        if let Some(mut child) = self.master.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        self.kill_master();
        for child in &mut self.others {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
