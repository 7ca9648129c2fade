//! Real `redis-server` processes for the tier's tests, on free loopback ports
//! (never the machine's shared 6379), without persistence, killed on drop.
//! Without `redis-server` (or `openssl` for the TLS test) the tests say so and pass as skipped, unless
//! `REQUIRE_REDIS=1` asks for them to fail instead (CI).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// True when `redis-server` and `redis-cli` can be run (and `openssl` when
/// `with_openssl`, for the TLS test). Otherwise prints a visible notice for
/// `test`, or panics when `REQUIRE_REDIS=1`.
pub fn redis_available(test: &str, with_openssl: bool) -> bool {
    static REDIS: OnceLock<bool> = OnceLock::new();
    static OPENSSL: OnceLock<bool> = OnceLock::new();
    let works =
        |program: &str, arg: &str| Command::new(program).arg(arg).output().is_ok_and(|out| out.status.success());
    let redis = *REDIS.get_or_init(|| works("redis-server", "--version") && works("redis-cli", "--version"));
    let openssl = !with_openssl || *OPENSSL.get_or_init(|| works("openssl", "version"));
    if redis && openssl {
        return true;
    }
    let missing = if redis { "openssl" } else { "redis-server/redis-cli" };
    if std::env::var("REQUIRE_REDIS").as_deref() == Ok("1") {
        panic!("REQUIRE_REDIS=1, but {missing} is not installed");
    }
    // Written to the stream itself: the test harness captures `eprintln!` of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "NOTICE: {missing} not found: skipping Redis tier test `{test}` (REQUIRE_REDIS=1 fails instead)"
    );
    false
}

/// Ports the cluster bus needs too (port + 10000); 6379 is the shared instance.
fn free_port(with_bus: bool) -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if port == 6379 || (with_bus && (port > 55535 || TcpListener::bind(("127.0.0.1", port + 10000)).is_err())) {
            continue;
        }
        return port;
    }
}

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
    extra: Vec<String>,
    tls: bool,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> RedisServer {
        Self::start_on(free_port(false), extra.iter().map(|s| s.to_string()).collect())
    }

    fn start_clustered() -> RedisServer {
        let args =
            ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "3000"];
        Self::start_on(free_port(true), args.iter().map(|s| s.to_string()).collect())
    }

    fn start_on(port: u16, extra: Vec<String>) -> RedisServer {
        let dir = std::env::temp_dir().join(format!("obo-native-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = RedisServer { port, child: None, dir, extra, tls: false };
        server.launch();
        server
    }

    /// A TLS-only server whose certificate (for IP 127.0.0.1) is signed by a
    /// fresh test CA; returns it with the CA's PEM path.
    pub fn start_tls() -> (RedisServer, PathBuf) {
        let port = free_port(false);
        let dir = std::env::temp_dir().join(format!("obo-native-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(&dir).output().expect("openssl runs");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let ca_subject = ["-subj", "/CN=obo-native test CA", "-addext", "basicConstraints=critical,CA:TRUE"];
        openssl(
            &[&["req", "-x509"][..], &ca_subject, &ec, &["-keyout", "ca.key", "-out", "ca.pem", "-days", "1"]].concat(),
        );
        openssl(
            &[&["req", "-subj", "/CN=127.0.0.1"][..], &ec, &["-keyout", "server.key", "-out", "server.csr"]].concat(),
        );
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "server.ext",
        ]);
        let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let extra = vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            file("server.pem"),
            "--tls-key-file".into(),
            file("server.key"),
            "--tls-ca-cert-file".into(),
            file("ca.pem"),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        let ca = dir.join("ca.pem");
        let mut server = RedisServer { port, child: None, dir, extra, tls: true };
        server.launch();
        (server, ca)
    }

    fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            // A later `--port` (TLS servers: `--port 0`) overrides this one.
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        self.wait_until_listening();
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                if self.tls {
                    return; // accepting is all a TLS port shows without a handshake
                }
                // Any answer (PONG, or NOAUTH with a password) means it serves.
                let mut reply = [0u8; 1];
                if stream.write_all(b"PING\r\n").is_ok() && stream.read(&mut reply).unwrap_or(0) == 1 {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("redis-server on port {} exited: {status}", self.port);
            }
            assert!(Instant::now() < deadline, "redis-server on port {} did not start", self.port);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn uri(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// Freezes the process (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        assert!(signal(self.pid(), "-STOP"));
    }

    pub fn resume(&self) {
        assert!(signal(self.pid(), "-CONT"));
    }
}

fn signal(pid: u32, signal: &str) -> bool {
    Command::new("kill").arg(signal).arg(pid.to_string()).status().is_ok_and(|s| s.success())
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three masters, no replicas, all slots assigned.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start_clustered()).collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(output.status.success(), "cluster create: {}", String::from_utf8_lossy(&output.stdout));
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &nodes {
            loop {
                let info =
                    Command::new("redis-cli").args(["-p", &node.port.to_string(), "cluster", "info"]).output().unwrap();
                let info = String::from_utf8_lossy(&info.stdout);
                if info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3") {
                    break;
                }
                assert!(Instant::now() < deadline, "the cluster did not settle");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        RedisCluster { nodes }
    }

    pub fn uris(&self) -> String {
        self.nodes.iter().map(RedisServer::uri).collect::<Vec<_>>().join(",")
    }
}
