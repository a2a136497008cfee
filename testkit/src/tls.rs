//! A throwaway certificate authority and a server certificate for `127.0.0.1`/`localhost`,
//! made with rcgen for each test run (nothing checked in, nothing trusted system-wide).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

/// PEM files of a test CA and a server certificate it signed, in a temp dir removed on drop.
#[derive(Debug)]
pub struct TestCertificates {
    dir: tempfile::TempDir,
    ca_pem: String,
}

impl TestCertificates {
    /// A fresh CA and a certificate for `127.0.0.1` and `localhost` signed by it.
    pub fn generate() -> TestCertificates {
        let ca_key = rcgen::KeyPair::generate().expect("a CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fencelock test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("a CA certificate");

        let server_key = rcgen::KeyPair::generate().expect("a server key");
        let mut server_params =
            rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("server params");
        server_params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let server = server_params
            .signed_by(&server_key, &ca)
            .expect("a server certificate");

        let dir = tempfile::Builder::new()
            .prefix("fencelock-tls-")
            .tempdir()
            .expect("a temp dir for certificates");
        let ca_pem = ca.pem();
        for (name, pem) in [
            ("ca.pem", ca_pem.as_str()),
            ("server.pem", &server.pem()),
            ("server.key", &server_key.serialize_pem()),
        ] {
            std::fs::write(dir.path().join(name), pem).expect("write a PEM file");
        }
        TestCertificates { dir, ca_pem }
    }

    /// The CA certificate (PEM), to trust in a client.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate's file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server certificate's file.
    pub fn cert_file(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The server key's file.
    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    /// The directory the files are in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
