//! The web configuration file (`--web.config.file`) on the lab: a real Prometheus scrapes the
//! agent over TLS with a client certificate and basic auth, and the clients the toolkit's tests
//! refuse are refused: a wrong password (401), no client certificate (handshake), plain HTTP
//! to the TLS port (no HTTP answer). A burst of wrong passwords does not stall a right one; a
//! file broken while the agent runs changes nothing; one broken at start is exit code 2.
//!
//! Certificates (a CA, the agent's for 127.0.0.1, Prometheus's client certificate) are made
//! here with rcgen; passwords are hashed with bcrypt at cost 10, as `htpasswd -B` does.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use base64::Engine as _;
use egress_lab::{
    Lab,
    agent::{AGENT_LISTEN, Agent, run_agent_to_exit},
    alerting::{Alerting, EVALUATION_INTERVAL},
    netns,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};

const USER: &str = "prometheus";
const PASSWORD: &str = "s3cret-scrape";

/// The files of one test: certificates, keys, the web configuration.
struct Files {
    dir: PathBuf,
    ca: String,
    client_cert: String,
    client_key: String,
}

impl Files {
    fn make(lab: &Lab) -> Files {
        let dir = std::env::temp_dir().join(format!("{}-web", lab.id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let mut server_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        server_params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
        let server = server_params.signed_by(&server_key, &ca).unwrap();
        let client_key = KeyPair::generate().unwrap();
        let client = CertificateParams::new(vec!["prometheus.lab".to_owned()])
            .unwrap()
            .signed_by(&client_key, &ca)
            .unwrap();
        let write = |name: &str, text: String| {
            std::fs::write(dir.join(name), text).unwrap();
            dir.join(name).display().to_string()
        };
        write("server.crt", server.pem());
        write("server.key", server_key.serialize_pem());
        Files {
            ca: write("ca.pem", ca.pem()),
            client_cert: write("client.crt", client.pem()),
            client_key: write("client.key", client_key.serialize_pem()),
            dir,
        }
    }

    fn web_config(&self) -> PathBuf {
        self.dir.join("web.yml")
    }

    fn write_web_config(&self, text: &str) {
        // Replaced as an editor or a deployment tool would: a new file renamed over the old.
        let tmp = self.dir.join("web.yml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.web_config()).unwrap();
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn good_config(hash: &str) -> String {
    format!(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  \
         client_ca_file: ca.pem\n  min_version: TLS12\nhttp_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n\
         basic_auth_users:\n  {USER}: {hash}\n"
    )
}

/// A TLS client for the agent: trusts the lab CA, with the client certificate or without.
fn client(files: &Files, with_cert: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&files.ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = if with_cert {
        let chain = CertificateDer::pem_file_iter(&files.client_cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(&files.client_key).unwrap();
        builder.with_client_auth_cert(chain, key).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    Arc::new(config)
}

/// `GET path` over TLS in namespace `ns`, with basic auth when given: the status and the
/// whole response (headers and body), or the error that stopped it.
fn https_get(
    ns: &str,
    config: Arc<rustls::ClientConfig>,
    path: &str,
    auth: Option<(&str, &str)>,
) -> Result<(u16, String), String> {
    let addr: SocketAddr = AGENT_LISTEN.parse().unwrap();
    let auth = auth.map(|(u, p)| {
        format!(
            "Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    });
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{}\r\n",
        auth.unwrap_or_default()
    );
    netns::run_in(ns, move || {
        let tcp =
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let name = ServerName::IpAddress(addr.ip().into());
        let connection = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(connection, tcp);
        tls.write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        match tls.read_to_end(&mut response) {
            Ok(_) => {}
            // HTTP/1.0: the agent closes without close_notify at times; what came is enough.
            Err(e) if !response.is_empty() && e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Err(e) => return Err(e.to_string()),
        }
        let response = String::from_utf8_lossy(&response).into_owned();
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no HTTP status in {response:?}"))?;
        Ok((status, response))
    })
}

/// Plain HTTP to the port: what comes back, if anything, in the time allowed.
fn plain_get(ns: &str) -> Vec<u8> {
    let addr: SocketAddr = AGENT_LISTEN.parse().unwrap();
    netns::run_in(ns, move || {
        let Ok(mut tcp) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            return Vec::new();
        };
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = write!(tcp, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer);
        answer
    })
}

fn empty_rules(files: &Files) -> PathBuf {
    let path = files.dir.join("rules.yml");
    std::fs::write(&path, "groups: []\n").unwrap();
    path
}

#[test]
fn prometheus_scrapes_over_tls_with_basic_auth_and_others_are_refused() {
    let lab = Lab::builder().devices(["camera"]).build();
    let files = Files::make(&lab);
    let hash = bcrypt::hash(PASSWORD, 10).unwrap();
    files.write_web_config(&good_config(&hash));
    let web = files.web_config().display().to_string();
    let with_cert = client(&files, true);
    let ns = lab.router_ns().to_owned();
    let agent = Agent::start_checked(
        &lab,
        "",
        &[
            "--web.config.file",
            &web,
            "--web.listen-address",
            AGENT_LISTEN,
        ],
        |_| {
            matches!(
                https_get(&ns, with_cert.clone(), "/healthz", Some((USER, PASSWORD))),
                Ok((200, _))
            )
        },
    );

    // Every path asks for the password, with the toolkit's header; the configured header too.
    for path in ["/metrics", "/healthz", "/api/devices"] {
        let (status, response) = https_get(&ns, with_cert.clone(), path, None).unwrap();
        assert_eq!(status, 401, "{path}: {response}");
        assert!(
            response.contains("www-authenticate: Basic"),
            "{path}: {response}"
        );
        assert!(
            response.contains("x-content-type-options: nosniff"),
            "{response}"
        );
        let (status, _) = https_get(&ns, with_cert.clone(), path, Some((USER, "wrong"))).unwrap();
        assert_eq!(status, 401, "{path} with a wrong password");
        let (status, _) =
            https_get(&ns, with_cert.clone(), path, Some(("nobody", PASSWORD))).unwrap();
        assert_eq!(status, 401, "{path} with an unknown user");
        let (status, response) =
            https_get(&ns, with_cert.clone(), path, Some((USER, PASSWORD))).unwrap();
        assert_eq!(status, 200, "{path}: {response}");
    }
    // No client certificate when one is required: the handshake fails, nothing is served.
    let refused = https_get(
        &ns,
        client(&files, false),
        "/metrics",
        Some((USER, PASSWORD)),
    );
    assert!(
        refused.is_err(),
        "served without a client certificate: {refused:?}"
    );
    eprintln!("without a client certificate: {}", refused.unwrap_err());
    // Plain HTTP to the TLS port: no HTTP answer at all.
    let answer = plain_get(&ns);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP answered: {:?}",
        String::from_utf8_lossy(&answer)
    );

    // A burst of wrong passwords does not stall a right one (the pair is known: no bcrypt).
    let started = Instant::now();
    let burst: Vec<_> = (0..50)
        .map(|i| {
            let (ns, config) = (ns.clone(), with_cert.clone());
            std::thread::spawn(move || {
                https_get(&ns, config, "/metrics", Some((USER, &format!("guess{i}"))))
                    .map(|(s, _)| s)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let asked = Instant::now();
    let right = https_get(&ns, with_cert.clone(), "/metrics", Some((USER, PASSWORD)));
    let latency = asked.elapsed();
    let statuses: Vec<_> = burst.into_iter().map(|t| t.join().unwrap()).collect();
    let burst_time = started.elapsed();
    assert_eq!(right.as_ref().map(|(s, _)| *s), Ok(200), "{right:?}");
    assert!(
        latency < Duration::from_secs(10),
        "the right password waited {latency:?}"
    );
    let count = |code| statuses.iter().filter(|s| **s == Ok(code)).count();
    eprintln!(
        "burst of 50 wrong passwords: {} refused at once (429), {} checked (401), {} failed; \
         the right password answered in {latency:?} during it; the burst took {burst_time:?}",
        count(429),
        count(401),
        statuses.iter().filter(|s| s.is_err()).count()
    );
    assert_eq!(count(429) + count(401), 50, "{statuses:?}");

    // A real Prometheus scrapes over TLS, with its client certificate and the password.
    let job = format!(
        "    scheme: https\n    basic_auth:\n      username: {USER}\n      password: {PASSWORD}\n    tls_config:\n      \
         ca_file: {}\n      cert_file: {}\n      key_file: {}\n",
        files.ca, files.client_cert, files.client_key
    );
    let alerting =
        Alerting::try_start_scraping(&lab, &empty_rules(&files), EVALUATION_INTERVAL, &job)
            .unwrap_or_else(|e| panic!("{e}"));
    let up = alerting.wait_for_query("up{job=\"egress-monitor\"} == 1", Duration::from_secs(30));
    assert!(!up.is_empty(), "target not up; {}", alerting.diagnostics());
    let series = alerting.wait_for_query("egress_monitor_polls_total", Duration::from_secs(30));
    assert!(
        !series.is_empty(),
        "no egress_monitor_polls_total; {}",
        alerting.diagnostics()
    );

    // Broken while running: the last good configuration stays, and the failure is counted.
    files.write_web_config("tls_server_config:\n  cert_file: server.crt\n  key_fil: server.key\n");
    let counted = wait(Duration::from_secs(10), || {
        https_get(&ns, with_cert.clone(), "/metrics", Some((USER, PASSWORD))).is_ok_and(
            |(s, body)| {
                s == 200
                    && body
                        .contains("egress_monitor_web_config_reloads_total{result=\"failure\"} 1")
            },
        )
    });
    assert!(
        counted,
        "the broken file was not counted; log:\n{}",
        agent.log()
    );
    let (status, _) = https_get(&ns, with_cert.clone(), "/metrics", None).unwrap();
    assert_eq!(status, 401, "the broken file opened the endpoint");
    assert!(
        agent
            .log()
            .contains("keeping the last good web configuration"),
        "{}",
        agent.log()
    );
    let up = alerting.wait_for_query("up{job=\"egress-monitor\"} == 1", Duration::from_secs(10));
    assert!(!up.is_empty(), "Prometheus lost the target");
    // A good file again: a new password is in force.
    let other = bcrypt::hash("another", 10).unwrap();
    files.write_web_config(&good_config(&other));
    let reloaded = wait(Duration::from_secs(10), || {
        matches!(
            https_get(&ns, with_cert.clone(), "/healthz", Some((USER, "another"))),
            Ok((200, _))
        )
    });
    assert!(
        reloaded,
        "the new password was not taken; log:\n{}",
        agent.log()
    );
}

#[test]
fn a_broken_web_config_at_start_is_a_configuration_error() {
    let lab = Lab::builder().devices(["camera"]).build();
    let files = Files::make(&lab);
    files.write_web_config("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS10\n");
    let web = files.web_config().display().to_string();
    let out = run_agent_to_exit(
        &lab,
        &["--lan", egress_lab::LAN_BRIDGE, "--web.config.file", &web],
        Duration::from_secs(20),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&web) && stderr.contains("min_version: TLS10 is not supported"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

fn wait(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}
