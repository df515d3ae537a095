//! HTTPS for the emulators, with a certificate authority made at run time:
//! no certificate or key is kept in git. A test trusts the CA (`--ca-file`)
//! and serves a certificate it signed; or one for another name, an expired
//! one, or one from a CA nobody trusts, to see them refused.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, date_time_ymd,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;

/// A certificate authority that exists only for the test that made it.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// Which certificate a server presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presented {
    /// Valid now, for `localhost` and `127.0.0.1`.
    Good,
    /// Valid now, for another name (`other.test`).
    OtherName,
    /// For `localhost`, but expired in 2021.
    Expired,
}

impl TestCa {
    /// A new CA, its key generated now.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names to check");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("ring generates a key");
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, key).expect("a CA certificate"),
        }
    }

    /// The CA's certificate, PEM: what a client is told to trust.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server configuration presenting a certificate this CA signed.
    pub fn server_config(&self, presented: Presented) -> Arc<ServerConfig> {
        let names: Vec<String> = match presented {
            Presented::OtherName => vec!["other.test".into()],
            _ => vec!["localhost".into(), "127.0.0.1".into()],
        };
        let mut params = CertificateParams::new(names).expect("valid names");
        params
            .distinguished_name
            .push(DnType::CommonName, "emulator");
        if presented == Presented::Expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().expect("ring generates a key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("the CA signs it");
        let chain = vec![
            CertificateDer::from(cert.der().to_vec()),
            self.issuer.der().clone(),
        ];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("ring supports TLS 1.2 and 1.3")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("a matching key");
        // As Stripe's API does: HTTP/2 to a client that asks, else HTTP/1.1.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}
