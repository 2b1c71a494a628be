//! Self-signed CA and serving certificate for the webhook Service.
//!
//! `tracecar-webhook certs` writes `ca.crt`, `ca.key`, `tls.crt`, `tls.key`
//! and `caBundle`. When `ca.crt` and `ca.key` already exist in the output
//! directory, the CA is reused, so re-running rotates only the serving
//! certificate and the `caBundle` in the MutatingWebhookConfiguration stays
//! valid.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// Validity of a new CA.
pub const CA_VALIDITY: Duration = Duration::days(3650);
/// Validity of a new serving certificate.
pub const SERVING_VALIDITY: Duration = Duration::days(365);

/// Why certificates could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// rcgen failed to build or sign a certificate.
    #[error("cannot generate certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The service or namespace is not a DNS-1123 label.
    #[error("{0:?} is not a valid DNS-1123 label (lowercase letters, digits and '-', at most 63)")]
    BadName(String),
}

/// A CA: its certificate in PEM and its key.
#[derive(Debug)]
pub struct Ca {
    /// PEM certificate.
    pub cert_pem: String,
    /// PEM private key (PKCS#8).
    pub key_pem: String,
}

/// A serving certificate and its key, both PEM.
#[derive(Debug)]
pub struct Serving {
    /// PEM certificate.
    pub cert_pem: String,
    /// PEM private key (PKCS#8).
    pub key_pem: String,
}

fn validity(params: &mut CertificateParams, length: Duration) {
    let now = OffsetDateTime::now_utc();
    // An hour of slack for nodes whose clocks run behind.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + length;
}

/// Generates a new CA (ECDSA P-256).
pub fn generate_ca() -> Result<Ca, CertsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "tracecar webhook CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, CA_VALIDITY);
    let cert = params.self_signed(&key)?;
    Ok(Ca {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The DNS names the API server may use to reach `service` in `namespace`.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Issues a serving certificate for `names`, signed by `ca`.
pub fn issue_serving(ca: &Ca, names: Vec<String>) -> Result<Serving, CertsError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let key = KeyPair::generate()?;
    let common_name = names.get(2).or(names.first()).cloned().unwrap_or_default();
    let mut params = CertificateParams::new(names)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut params, SERVING_VALIDITY);
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Serving {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn check_label(name: &str) -> Result<(), CertsError> {
    if crate::podcheck::is_dns1123_label(name) {
        Ok(())
    } else {
        Err(CertsError::BadName(name.to_owned()))
    }
}

fn write_file(dir: &Path, name: &str, contents: &str, private: bool) -> Result<(), CertsError> {
    let path = dir.join(name);
    let io = |source| CertsError::Io {
        path: path.clone(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    // Write a sibling and rename, so a watcher never reads half a file.
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = options.open(&tmp).map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

/// What [`write_certs`] did.
#[derive(Debug)]
pub struct Written {
    /// Whether an existing CA in the directory was reused.
    pub reused_ca: bool,
    /// Base64 of `ca.crt`, for `caBundle`.
    pub ca_bundle: String,
}

/// Generates (or reuses) a CA and a serving certificate for
/// `service.namespace.svc` and writes them into `out`.
pub fn write_certs(service: &str, namespace: &str, out: &Path) -> Result<Written, CertsError> {
    check_label(service)?;
    check_label(namespace)?;
    std::fs::create_dir_all(out).map_err(|source| CertsError::Io {
        path: out.to_owned(),
        source,
    })?;
    let read = |name: &str| std::fs::read_to_string(out.join(name)).ok();
    let (ca, reused_ca) = match (read("ca.crt"), read("ca.key")) {
        (Some(cert_pem), Some(key_pem)) => (Ca { cert_pem, key_pem }, true),
        _ => (generate_ca()?, false),
    };
    let serving = issue_serving(&ca, service_dns_names(service, namespace))?;
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(&ca.cert_pem);
    if !reused_ca {
        write_file(out, "ca.key", &ca.key_pem, true)?;
        write_file(out, "ca.crt", &ca.cert_pem, false)?;
    }
    // Key before certificate: a reloading server pairs them by key match.
    write_file(out, "tls.key", &serving.key_pem, true)?;
    write_file(out, "tls.crt", &serving.cert_pem, false)?;
    write_file(out, "caBundle", &format!("{ca_bundle}\n"), false)?;
    Ok(Written {
        reused_ca,
        ca_bundle,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_checked() {
        assert!(check_label("tracecar-webhook").is_ok());
        assert!(check_label("Bad").is_err());
        assert!(check_label("-x").is_err());
        assert!(check_label("").is_err());
        assert!(check_label(&"a".repeat(64)).is_err());
    }

    #[test]
    fn serving_cert_names_every_service_form() -> Result<(), CertsError> {
        let ca = generate_ca()?;
        let serving = issue_serving(&ca, service_dns_names("wh", "ns"))?;
        use rustls::pki_types::{CertificateDer, pem::PemObject as _};
        let der = CertificateDer::pem_slice_iter(serving.cert_pem.as_bytes())
            .next()
            .and_then(Result::ok)
            .ok_or(CertsError::BadName("no cert".into()))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|_| CertsError::BadName("parse".into()))?;
        let san = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|ext| format!("{:?}", ext.value))
            .unwrap_or_default();
        for name in ["\"wh\"", "wh.ns.svc", "wh.ns.svc.cluster.local"] {
            assert!(san.contains(name), "{name} missing from {san}");
        }
        Ok(())
    }
}
