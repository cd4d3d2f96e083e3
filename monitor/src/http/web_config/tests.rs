//! The web configuration's checks, with the cases of exporter-toolkit's own tests
//! (`web/tls_config_test.go` and its `testdata/*.yml`): which files are errors, and for what.
//! Certificates are made here, at test time.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use super::*;

/// A directory of its own with a CA, a server certificate and key, and the file to test.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Dir {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "egress-web-config-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("server.crt"), server.pem()).unwrap();
        std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
        std::fs::write(dir.join("junk.pem"), "not a certificate\n").unwrap();
        Self(dir)
    }

    fn load(&self, yaml: &str) -> Result<WebConfig, String> {
        let path = self.0.join("web.yml");
        std::fs::write(&path, yaml).unwrap();
        load(&path).map_err(|e| e.to_string())
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

const TLS: &str = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";

#[test]
fn good_files_load() {
    let dir = Dir::new();
    let hash = bcrypt::hash("dave123", 4).unwrap();
    let inline = format!(
        "tls_server_config:\n  cert: |\n{}  key: |\n{}",
        indent(&std::fs::read_to_string(dir.0.join("server.crt")).unwrap()),
        indent(&std::fs::read_to_string(dir.0.join("server.key")).unwrap()),
    );
    // (file, TLS, users)
    let cases: Vec<(String, bool, usize)> = vec![
        // web_config_empty.yml
        (String::new(), false, 0),
        ("# only a comment\n".into(), false, 0),
        // web_config_noAuth.good.yml, with paths relative to the file
        (TLS.into(), true, 0),
        // absolute paths
        (
            format!(
                "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
                dir.path("server.crt"),
                dir.path("server.key")
            ),
            true,
            0,
        ),
        // web_config_noAuth_tlsInline.good.yml
        (inline, true, 0),
        // web_config_users_noTLS.good.yml
        (format!("basic_auth_users:\n  dave: {hash}\n"), false, 1),
        // web_config_users.good.yml
        (
            format!("{TLS}basic_auth_users:\n  dave: {hash}\n  carol: {hash}\n"),
            true,
            2,
        ),
        // someCiphers, allCurves less P-521, noHTTP2, versions
        (
            format!(
                "{TLS}  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, \
                 TLS_AES_128_GCM_SHA256]\n  prefer_server_cipher_suites: false\n  curve_preferences: [X25519, CurveP256, \
                 CurveP384]\n  min_version: TLS12\n  max_version: TLS13\n"
            ),
            true,
            0,
        ),
        (
            format!(
                "{TLS}  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]\nhttp_server_config:\n  http2: false\n"
            ),
            true,
            0,
        ),
        (format!("{TLS}  min_version: TLS13\n"), true, 0),
        (format!("{TLS}  max_version: TLS12\n"), true, 0),
        // Client certificates: every policy the toolkit knows.
        (format!("{TLS}  client_auth_type: RequestClientCert\n"), true, 0),
        (format!("{TLS}  client_auth_type: RequireAnyClientCert\n"), true, 0),
        (format!("{TLS}  client_auth_type: RequireClientCert\n"), true, 0),
        (
            format!("{TLS}  client_auth_type: RequireAnyClientCert\n  client_allowed_sans: [prometheus]\n"),
            true,
            0,
        ),
        (
            format!("{TLS}  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.pem\n"),
            true,
            0,
        ),
        (
            format!(
                "{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n  client_allowed_sans: [a, b]\n"
            ),
            true,
            0,
        ),
        // web_config_headers.good.yml
        (
            "http_server_config:\n  headers:\n    Content-Security-Policy: \"default-src 'self'\"\n    X-Frame-Options: deny\n    \
             X-Content-Type-Options: nosniff\n    X-XSS-Protection: \"1; mode=block\"\n    Strict-Transport-Security: max-age=31536000\n"
                .into(),
            false,
            0,
        ),
        // Versions without a certificate do not ask for TLS (the toolkit's IsEnabled).
        ("tls_server_config:\n  min_version: TLS13\n".into(), false, 0),
        ("tls_server_config:\nhttp_server_config:\nbasic_auth_users:\n".into(), false, 0),
        ("rate_limit:\n  interval: 1s\n  burst: 10\n".into(), false, 0),
        ("rate_limit:\n  interval: 0\n".into(), false, 0),
    ];
    for (yaml, tls, users) in cases {
        let config = dir.load(&yaml).unwrap_or_else(|e| panic!("{yaml}\n{e}"));
        assert_eq!(config.tls.is_some(), tls, "{yaml}");
        assert_eq!(config.users.len(), users, "{yaml}");
    }
    let config = dir
        .load("rate_limit:\n  interval: 1m30s\n  burst: 3\n")
        .unwrap();
    assert_eq!(
        config.rate_limit.interval,
        std::time::Duration::from_secs(90)
    );
    assert_eq!(config.rate_limit.burst, 3);
    let config = dir
        .load("http_server_config:\n  headers:\n    X-Frame-Options: sameorigin\n    X-XSS-Protection: \"\"\n")
        .unwrap();
    assert_eq!(config.headers.len(), 1, "a blank value sets nothing");
    assert_eq!(config.headers[0].0, "x-frame-options");
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

#[test]
fn bad_files_are_errors_naming_the_problem() {
    let dir = Dir::new();
    let ca = "  client_ca_file: ca.pem\n";
    // (file, text the error must contain): the toolkit's bad cases, then rustls's limits.
    let cases: Vec<(String, &str)> = vec![
        // web_config_junk.yml, web_config_junk_key.yml: strict YAML
        ("tls_server_config: [1, 2\n".into(), "web.yml"),
        ("tls_server_config:\n  cert_filed: x\n".into(), "unknown field `cert_filed`"),
        ("tls_config:\n  cert_file: x\n".into(), "unknown field `tls_config`"),
        ("rate_limit:\n  interval: 1s\n  bursts: 2\n".into(), "unknown field `bursts`"),
        ("http_server_config:\n  http2: maybe\n".into(), "http2"),
        ("basic_auth_users:\n  a: x\n  a: y\n".into(), "duplicate"),
        // certPath_empty, keyPath_empty, certPath_keyPath_empty, cert_empty, key_empty
        ("tls_server_config:\n  cert_file: \"\"\n  key_file: server.key\n".into(), "missing one of cert or cert_file"),
        ("tls_server_config:\n  cert_file: server.crt\n  key_file: \"\"\n".into(), "missing one of key or key_file"),
        ("tls_server_config:\n  cert_file: \"\"\n  key_file: \"\"\n  client_auth_type: NoClientCert\n".into(), "missing one of cert or cert_file"),
        ("tls_server_config:\n  cert: \"\"\n  key_file: server.key\n".into(), "missing one of cert or cert_file"),
        ("tls_server_config:\n  cert_file: server.crt\n  key: \"\"\n".into(), "missing one of key or key_file"),
        // certPath_invalid, keyPath_invalid, clientCAs_invalid
        ("tls_server_config:\n  cert_file: nowhere.crt\n  key_file: server.key\n".into(), "cert_file: cannot read"),
        ("tls_server_config:\n  cert_file: server.crt\n  key_file: nowhere.key\n".into(), "No such file"),
        (format!("{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: nowhere.pem\n"), "client_ca_file: cannot read"),
        // clientCAs_nocerts, clientCAsText_nocerts
        (format!("{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: junk.pem\n"), "client_ca_file: no PEM certificate"),
        (format!("{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca: junk\n"), "client_ca: no PEM certificate"),
        // web_config_noAuth.bad.yml: a CA without a policy
        (format!("{TLS}{ca}"), "client CA's have been configured without a Client Auth Policy"),
        (format!("{TLS}  client_auth_type: AskNicely\n"), "invalid ClientAuth: AskNicely"),
        // client_san_no_client_auth, client_san_optional_cert
        (format!("{TLS}  client_allowed_sans: [a]\n"), "client_allowed_sans requires client_auth_type"),
        (format!("{TLS}  client_auth_type: RequestClientCert\n  client_allowed_sans: [a]\n"), "client_allowed_sans requires"),
        (format!("{TLS}  client_auth_type: VerifyClientCertIfGiven\n{ca}  client_allowed_sans: [a]\n"), "client_allowed_sans requires"),
        // user_list_invalid
        ("basic_auth_users:\n  dave: $2y$10$short\n".into(), "basic_auth_users: the hash of user \"dave\" is not a bcrypt hash"),
        // inventedCiphers, inventedCurves, wrongTLSVersion
        (format!("{TLS}  cipher_suites: [TLS_INVENTED_CIPHER]\n"), "unknown cipher: TLS_INVENTED_CIPHER"),
        (format!("{TLS}  curve_preferences: [CurveInvented]\n"), "unknown curve: CurveInvented"),
        // Not in the toolkit's list of curves.
        (format!("{TLS}  curve_preferences: [X25519MLKEM768]\n"), "unknown curve: X25519MLKEM768"),
        (format!("{TLS}  min_version: TLS111\n"), "unknown TLS version: TLS111"),
        // noHTTP2Cipher
        (format!("{TLS}  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]\n"), "missing an HTTP/2-required"),
        // headers: content_type_options, frame_options, extra_header
        ("http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n".into(), "invalid value for X-Content-Type-Options"),
        ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n".into(), "invalid value for X-Frame-Options"),
        ("http_server_config:\n  headers:\n    Server: egress\n".into(), "HTTP header \"Server\" can not be configured"),
        ("http_server_config:\n  headers:\n    x-frame-options: deny\n".into(), "can not be configured"),
        // What rustls cannot do: errors naming the key, never a weaker or different server.
        (format!("{TLS}  min_version: TLS10\n"), "tls_server_config.min_version: TLS10 is not supported"),
        (format!("{TLS}  min_version: TLS11\n"), "min_version: TLS11 is not supported"),
        (format!("{TLS}  max_version: TLS11\n"), "max_version: TLS11 is not supported"),
        (format!("{TLS}  min_version: TLS13\n  max_version: TLS12\n"), "min_version TLS13 is above max_version TLS12"),
        (format!("{TLS}  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA]\n"), "cipher_suites: TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA is not offered"),
        (format!("{TLS}  cipher_suites: [TLS_RSA_WITH_AES_128_GCM_SHA256]\n"), "is not offered"),
        (format!("{TLS}  curve_preferences: [CurveP521]\n"), "curve_preferences: CurveP521 is not offered"),
        // Verifying client certificates needs the CA that signs them.
        (format!("{TLS}  client_auth_type: RequireAndVerifyClientCert\n"), "needs client_ca_file or client_ca"),
        (format!("{TLS}  cert: x\n"), "set cert or cert_file, not both"),
        ("tls_server_config:\n  cert_file: junk.pem\n  key_file: server.key\n".into(), "cert_file: no PEM certificate"),
        ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.crt\n".into(), "key_file: no PEM private key"),
        ("rate_limit:\n  interval: fast\n".into(), "invalid duration \"fast\""),
    ];
    for (yaml, expected) in cases {
        match dir.load(&yaml) {
            Ok(c) => panic!("accepted:\n{yaml}\n{c:?}"),
            Err(e) => {
                assert!(
                    e.contains(expected),
                    "{yaml}\nerror: {e}\nexpected: {expected}"
                );
                assert!(e.starts_with("web configuration file "), "{e}");
            }
        }
    }
}

#[test]
fn files_that_are_not_regular_or_too_large_are_refused() {
    let dir = Dir::new();
    let fifo = dir.0.join("fifo.yml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let e = load(&fifo).unwrap_err().to_string();
    assert!(
        e.contains("not a regular file") && e.contains("fifo.yml"),
        "{e}"
    );
    let e = load(&dir.0).unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
    let e = load(Path::new("/nonexistent/web.yml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/nonexistent/web.yml") && e.contains("No such file"),
        "{e}"
    );
    let big = dir.0.join("big.yml");
    std::fs::write(&big, vec![b'#'; file::MAX_FILE_BYTES as usize + 1]).unwrap();
    assert!(load(&big).unwrap_err().to_string().contains("larger than"));
}

#[test]
fn the_watcher_reloads_a_good_file_and_keeps_the_last_good_one() {
    let dir = Dir::new();
    let path = dir.0.join("web.yml");
    let hash = bcrypt::hash("x", 4).unwrap();
    std::fs::write(&path, format!("{TLS}basic_auth_users:\n  a: {hash}\n")).unwrap();
    let live = Live::new(load(&path).unwrap());
    let reloads = Arc::new(Reloads::default());
    let mut watcher = watch::Watcher::new(path.clone(), live.clone(), reloads.clone());
    assert_eq!(watcher.check(), watch::Checked::Unchanged);
    // A second user: taken.
    std::fs::write(
        &path,
        format!("{TLS}basic_auth_users:\n  a: {hash}\n  b: {hash}\n"),
    )
    .unwrap();
    assert_eq!(watcher.check(), watch::Checked::Reloaded);
    assert_eq!(live.current().users.len(), 2);
    // Broken: refused once, the last good one stays.
    std::fs::write(&path, format!("{TLS}basic_auth_users:\n  a: plain\n")).unwrap();
    assert!(
        matches!(watcher.check(), watch::Checked::Refused(e) if e.contains("basic_auth_users"))
    );
    assert_eq!(watcher.check(), watch::Checked::Unchanged);
    assert_eq!(live.current().users.len(), 2);
    // TLS off needs a restart.
    std::fs::write(&path, format!("basic_auth_users:\n  a: {hash}\n")).unwrap();
    assert!(matches!(watcher.check(), watch::Checked::Refused(e) if e.contains("restart")));
    assert!(live.current().tls.is_some());
    // A broken key file (the configuration unchanged) is a change too.
    std::fs::write(&path, format!("{TLS}basic_auth_users:\n  a: {hash}\n")).unwrap();
    assert_eq!(watcher.check(), watch::Checked::Reloaded);
    std::fs::write(dir.0.join("server.key"), "gone\n").unwrap();
    assert!(matches!(watcher.check(), watch::Checked::Refused(e) if e.contains("key_file")));
    assert!(live.current().tls.is_some());
    let mut text = String::new();
    reloads.render(&mut text);
    assert!(
        text.contains("egress_monitor_web_config_reloads_total{result=\"success\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("egress_monitor_web_config_reloads_total{result=\"failure\"} 3\n"),
        "{text}"
    );
}

#[test]
fn client_certificate_sans_are_read_as_go_writes_them() {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["prometheus.example".to_owned()]).unwrap();
    params.subject_alt_names.extend([
        rcgen::SanType::IpAddress("192.0.2.1".parse().unwrap()),
        rcgen::SanType::IpAddress("2001:db8::1".parse().unwrap()),
        rcgen::SanType::Rfc822Name("ops@example.org".try_into().unwrap()),
        rcgen::SanType::URI("spiffe://example.org/prometheus".try_into().unwrap()),
    ]);
    let cert = params.self_signed(&key).unwrap();
    assert_eq!(
        tls::sans_of(cert.der()),
        [
            "prometheus.example",
            "192.0.2.1",
            "2001:db8::1",
            "ops@example.org",
            "spiffe://example.org/prometheus"
        ]
    );
    assert!(tls::sans_of(b"junk").is_empty());
}
