//! `tls_server_config` made into a rustls `ServerConfig`, with ring as the crypto provider.
//!
//! The file names Go's `crypto/tls` settings; rustls offers a subset. Whatever the file asks
//! that rustls cannot do is an error naming the key, never a silently different server:
//! TLS 1.0 and 1.1 (rustls has 1.2 and 1.3 only), the CBC and RSA key exchange suites, and the
//! P-521 curve (not in ring). TLS 1.3 suites are not configurable, as in Go: their names are
//! accepted and change nothing.

use std::{net::IpAddr, path::Path, path::PathBuf, sync::Arc};

use rustls::{
    CipherSuite, DigitallySignedStruct, DistinguishedName, NamedGroup, RootCertStore, ServerConfig,
    SignatureScheme, SupportedProtocolVersion,
    client::danger::HandshakeSignatureValid,
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject as _},
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};

use super::file::{self, TlsServerConfig, TlsVersion};

/// Go's names of the suites `tls.CipherSuites()` lists (the ones the toolkit accepts), and
/// what rustls has of them.
const GO_SUITES: [(&str, Suite); 17] = [
    ("TLS_AES_128_GCM_SHA256", Suite::Tls13),
    ("TLS_AES_256_GCM_SHA384", Suite::Tls13),
    ("TLS_CHACHA20_POLY1305_SHA256", Suite::Tls13),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        Suite::Tls12(CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        Suite::Tls12(CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384),
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        Suite::Tls12(CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        Suite::Tls12(CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        Suite::Tls12(CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384),
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        Suite::Tls12(CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
    ),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", Suite::Missing),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", Suite::Missing),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", Suite::Missing),
    ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", Suite::Missing),
    ("TLS_RSA_WITH_AES_128_CBC_SHA", Suite::Missing),
    ("TLS_RSA_WITH_AES_256_CBC_SHA", Suite::Missing),
    ("TLS_RSA_WITH_AES_128_GCM_SHA256", Suite::Missing),
    ("TLS_RSA_WITH_AES_256_GCM_SHA384", Suite::Missing),
];

#[derive(Clone, Copy)]
enum Suite {
    /// A TLS 1.3 suite: always on, not configurable (as in Go).
    Tls13,
    Tls12(CipherSuite),
    /// Known to Go, not offered by rustls.
    Missing,
}

/// The curves the toolkit names, and the key exchange group of each in ring.
const GO_CURVES: [(&str, Option<NamedGroup>); 4] = [
    ("CurveP256", Some(NamedGroup::secp256r1)),
    ("CurveP384", Some(NamedGroup::secp384r1)),
    ("CurveP521", None),
    ("X25519", Some(NamedGroup::X25519)),
];

/// `client_auth_type`, as Go's `tls.ClientAuthType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    fn parse(name: &str) -> Result<Self, String> {
        Ok(match name {
            "" | "NoClientCert" => ClientAuth::NoClientCert,
            "RequestClientCert" => ClientAuth::RequestClientCert,
            // The toolkit keeps the old name too.
            "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
            other => {
                return Err(format!(
                    "tls_server_config.client_auth_type: invalid ClientAuth: {other} (expected NoClientCert, \
                     RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert)"
                ));
            }
        })
    }
}

/// What the TLS section made: the server configuration and the files it read (watched for
/// changes, so that a renewed certificate is picked up).
pub struct Built {
    pub server: Arc<ServerConfig>,
    pub files: Vec<PathBuf>,
}

/// Checks and builds `tls`; `config_path` is the web configuration file (relative paths are
/// relative to its directory). `http2` is `http_server_config.http2`, for the toolkit's check
/// of the suites HTTP/2 requires.
pub fn build(tls: &TlsServerConfig, http2: bool, config_path: &Path) -> Result<Built, String> {
    let mut files = Vec::new();
    let mut read = |key: &str, path: &str| -> Result<Vec<u8>, String> {
        let path = file::resolve(config_path, path);
        let bytes = file::read_small_file(&path).map_err(|e| {
            format!(
                "tls_server_config.{key}: cannot read {}: {e}",
                path.display()
            )
        })?;
        files.push(path);
        Ok(bytes)
    };
    if tls.cert_file.is_empty() && tls.cert.is_empty() {
        return Err("tls_server_config: missing one of cert or cert_file".into());
    }
    if tls.key_file.is_empty() && tls.key.is_empty() {
        return Err("tls_server_config: missing one of key or key_file".into());
    }
    for (inline, file, name) in [
        (&tls.cert, &tls.cert_file, "cert"),
        (&tls.key, &tls.key_file, "key"),
        (&tls.client_ca, &tls.client_ca_file, "client_ca"),
    ] {
        if !inline.is_empty() && !file.is_empty() {
            return Err(format!(
                "tls_server_config: set {name} or {name}_file, not both"
            ));
        }
    }
    let cert_pem = if tls.cert_file.is_empty() {
        tls.cert.as_bytes().to_vec()
    } else {
        read("cert_file", &tls.cert_file)?
    };
    let key_pem = if tls.key_file.is_empty() {
        tls.key.as_bytes().to_vec()
    } else {
        read("key_file", &tls.key_file)?
    };
    let (cert_key, key_key) = (
        if tls.cert_file.is_empty() {
            "cert"
        } else {
            "cert_file"
        },
        if tls.key_file.is_empty() {
            "key"
        } else {
            "key_file"
        },
    );
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls_server_config.{cert_key}: not a PEM certificate: {e}"))?;
    if chain.is_empty() {
        return Err(format!(
            "tls_server_config.{cert_key}: no PEM certificate in it"
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("tls_server_config.{key_key}: no PEM private key in it: {e}"))?;

    let client_auth = ClientAuth::parse(&tls.client_auth_type)?;
    let ca_pem = if !tls.client_ca_file.is_empty() {
        Some(read("client_ca_file", &tls.client_ca_file)?)
    } else if !tls.client_ca.is_empty() {
        Some(tls.client_ca.as_bytes().to_vec())
    } else {
        None
    };
    let ca_key = if tls.client_ca_file.is_empty() {
        "client_ca"
    } else {
        "client_ca_file"
    };
    if ca_pem.is_some() && client_auth == ClientAuth::NoClientCert {
        return Err(
            "tls_server_config: client CA's have been configured without a Client Auth Policy \
             (set client_auth_type, e.g. RequireAndVerifyClientCert)"
                .into(),
        );
    }
    if tls.client_allowed_sans.is_some()
        && !matches!(
            client_auth,
            ClientAuth::RequireAnyClientCert | ClientAuth::RequireAndVerifyClientCert
        )
    {
        return Err(
            "tls_server_config.client_allowed_sans requires client_auth_type to be one of \
             RequireAnyClientCert or RequireAndVerifyClientCert"
                .into(),
        );
    }

    let versions = versions(tls)?;
    let provider = Arc::new(provider(tls, http2)?);
    let verifier = verifier(client_auth, ca_pem.as_deref(), ca_key, tls, &provider)?;
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            format!("tls_server_config: the certificate ({cert_key}) and key ({key_key}) do not make a pair: {e}")
        })?;
    // HTTP/1.1 only: what the agent serves (and what Prometheus scrapes with).
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Built {
        server: Arc::new(server),
        files,
    })
}

fn versions(tls: &TlsServerConfig) -> Result<Vec<&'static SupportedProtocolVersion>, String> {
    let min = tls.min_version.unwrap_or(TlsVersion::Tls12);
    let max = tls.max_version.unwrap_or(TlsVersion::Tls13);
    for (key, version) in [("min_version", min), ("max_version", max)] {
        if version < TlsVersion::Tls12 {
            return Err(format!(
                "tls_server_config.{key}: {} is not supported: this agent's TLS (rustls) offers TLS12 and TLS13 only",
                version.name()
            ));
        }
    }
    if min > max {
        return Err(format!(
            "tls_server_config: min_version {} is above max_version {}",
            min.name(),
            max.name()
        ));
    }
    let mut out = Vec::new();
    if max == TlsVersion::Tls13 {
        out.push(&rustls::version::TLS13);
    }
    if min == TlsVersion::Tls12 {
        out.push(&rustls::version::TLS12);
    }
    Ok(out)
}

/// ring's provider with the suites and curves the file chose, in its order.
fn provider(tls: &TlsServerConfig, http2: bool) -> Result<CryptoProvider, String> {
    let mut provider = rustls::crypto::ring::default_provider();
    if !tls.cipher_suites.is_empty() {
        let mut tls12 = Vec::new();
        for name in &tls.cipher_suites {
            match GO_SUITES.iter().find(|(n, _)| n == name).map(|(_, s)| *s) {
                None => {
                    return Err(format!(
                        "tls_server_config.cipher_suites: unknown cipher: {name}"
                    ));
                }
                Some(Suite::Missing) => {
                    return Err(format!(
                        "tls_server_config.cipher_suites: {name} is not offered by this agent's TLS (rustls has no CBC \
                         or RSA key exchange suites); choose among the TLS_ECDHE_*_GCM_* and *_CHACHA20_POLY1305_SHA256 suites"
                    ));
                }
                Some(Suite::Tls13) => {}
                Some(Suite::Tls12(suite)) => tls12.push(suite),
            }
        }
        // Go's HTTP/2 server refuses a suite list without its required suite; the toolkit
        // reports it, and a file valid here stays valid there.
        let below_13 = tls.min_version.unwrap_or(TlsVersion::Tls12) < TlsVersion::Tls13;
        let required = [
            CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ];
        if http2 && below_13 && !tls12.iter().any(|s| required.contains(s)) {
            return Err(
                "tls_server_config.cipher_suites: TLSConfig.CipherSuites is missing an HTTP/2-required \
                 AES_128_GCM_SHA256 cipher (need at least one of TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 or \
                 TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256), or set http_server_config.http2: false"
                    .into(),
            );
        }
        let all = std::mem::take(&mut provider.cipher_suites);
        let (v13, v12): (Vec<_>, Vec<_>) = all
            .into_iter()
            .partition(|s| s.version() == &rustls::version::TLS13);
        provider.cipher_suites = v13;
        for wanted in tls12 {
            if let Some(s) = v12.iter().find(|s| s.suite() == wanted) {
                provider.cipher_suites.push(*s);
            }
        }
    }
    if !tls.curve_preferences.is_empty() {
        let all = std::mem::take(&mut provider.kx_groups);
        for name in &tls.curve_preferences {
            match GO_CURVES.iter().find(|(n, _)| n == name).map(|(_, g)| *g) {
                None => {
                    return Err(format!(
                        "tls_server_config.curve_preferences: unknown curve: {name}"
                    ));
                }
                Some(None) => {
                    return Err(format!(
                        "tls_server_config.curve_preferences: {name} is not offered by this agent's TLS (ring has \
                         X25519, CurveP256 and CurveP384)"
                    ));
                }
                Some(Some(group)) => {
                    if let Some(g) = all.iter().find(|g| g.name() == group)
                        && !provider.kx_groups.iter().any(|k| k.name() == group)
                    {
                        provider.kx_groups.push(*g);
                    }
                }
            }
        }
    }
    // `prefer_server_cipher_suites` has no effect, as in Go 1.18 and later.
    Ok(provider)
}

fn verifier(
    auth: ClientAuth,
    ca_pem: Option<&[u8]>,
    ca_key: &str,
    tls: &TlsServerConfig,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let algorithms = provider.signature_verification_algorithms;
    let inner: Arc<dyn ClientCertVerifier> = match auth {
        ClientAuth::NoClientCert => return Ok(WebPkiClientVerifier::no_client_auth()),
        ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert => Arc::new(AnyCert {
            mandatory: auth == ClientAuth::RequireAnyClientCert,
            algorithms,
        }),
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
            let Some(pem) = ca_pem else {
                return Err(format!(
                    "tls_server_config.client_auth_type: {:?} needs client_ca_file or client_ca (the CA that \
                     signs the clients' certificates)",
                    auth
                ));
            };
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| {
                    format!("tls_server_config.{ca_key}: not a PEM certificate: {e}")
                })?;
                roots
                    .add(cert)
                    .map_err(|e| format!("tls_server_config.{ca_key}: {e}"))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "tls_server_config.{ca_key}: no PEM certificate in it"
                ));
            }
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let builder = if auth == ClientAuth::VerifyClientCertIfGiven {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            builder
                .build()
                .map_err(|e| format!("tls_server_config.{ca_key}: {e}"))?
        }
    };
    Ok(match &tls.client_allowed_sans {
        Some(sans) => Arc::new(AllowedSans {
            inner,
            sans: sans.clone(),
        }),
        None => inner,
    })
}

/// RequestClientCert and RequireAnyClientCert: any certificate will do (its signature over
/// the handshake is still checked: the client holds its key).
#[derive(Debug)]
struct AnyCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `client_allowed_sans`: after the inner check, the client certificate must carry one of
/// these SANs exactly (DNS, e-mail, IP or URI), as the toolkit's `VerifyPeerCertificate`.
#[derive(Debug)]
struct AllowedSans {
    inner: Arc<dyn ClientCertVerifier>,
    sans: Vec<String>,
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if sans_of(end_entity).iter().any(|s| self.sans.contains(s)) {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The certificate's DNS, e-mail, IP and URI SANs, written as Go writes them.
pub fn sans_of(cert: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert) else {
        return Vec::new();
    };
    let Ok(Some(sans)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    sans.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                Some((*s).to_owned())
            }
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes)
                    .ok()
                    .map(|b| IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*bytes)
                    .ok()
                    .map(|b| IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}
