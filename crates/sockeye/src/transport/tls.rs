//! TLS for `wss://` over rustls (cargo feature `rustls`, on by default).
//!
//! Clients verify servers against the bundled Mozilla root store (`webpki-roots`), so a build
//! behaves the same on every machine; [`client_config`] adds extra roots from PEM, and
//! [`WebSocketConfig::tls_client`](crate::WebSocketConfig::tls_client) takes any
//! `rustls::ClientConfig` (e.g. one using the platform verifier). Servers take a certificate
//! chain and key in PEM ([`server_config_from_pem`]) or a `rustls::ServerConfig`. Both sides
//! offer ALPN `http/1.1`.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::error::Error;

use crate::transport::Transport;
/// The rustls crate sockeye is built with, to name `ClientConfig` and `ServerConfig`.
pub use tokio_rustls::rustls;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::Tls(e.into())
}

/// Parses every certificate in a PEM bundle.
///
/// # Errors
///
/// [`Error::Tls`] for malformed PEM or a bundle without certificates.
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(format!("invalid certificate pem: {e}")))?;
    if certs.is_empty() {
        return Err(tls_error("no certificate in pem"));
    }
    Ok(certs)
}

/// A client configuration trusting the bundled Mozilla roots plus the certificates in
/// `extra_roots_pem` (e.g. a private CA), offering ALPN `http/1.1`.
///
/// # Errors
///
/// [`Error::Tls`] when the PEM holds no valid certificate.
pub fn client_config(extra_roots_pem: Option<&[u8]>) -> Result<Arc<ClientConfig>, Error> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_roots_pem {
        for cert in certificates_from_pem(pem)? {
            roots.add(cert).map_err(tls_error)?;
        }
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The default client configuration (bundled roots only), built once.
fn default_client_config() -> Result<Arc<ClientConfig>, Error> {
    static DEFAULT: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    if let Some(config) = DEFAULT.get() {
        return Ok(config.clone());
    }
    let config = client_config(None)?;
    Ok(DEFAULT.get_or_init(|| config).clone())
}

/// A server configuration from a PEM certificate chain (leaf first) and a PEM private key
/// (PKCS#8, PKCS#1 or SEC1), offering ALPN `http/1.1`.
///
/// # Errors
///
/// [`Error::Tls`] for malformed PEM or a key that does not match the certificate.
pub fn server_config_from_pem(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<ServerConfig>, Error> {
    let chain = certificates_from_pem(cert_chain_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| tls_error(format!("invalid private key pem: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(tls_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A copy of `config` offering ALPN `h2` before `http/1.1`, for servers that also speak
/// HTTP/2 ([`Server::http2`](crate::Server::http2)).
#[cfg(feature = "http2")]
pub(crate) fn with_h2_alpn(config: &Arc<ServerConfig>) -> Arc<ServerConfig> {
    let mut config = (**config).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// [`server_config_from_pem`] reading the two files.
///
/// # Errors
///
/// [`Error::Io`] when a file cannot be read, else as [`server_config_from_pem`].
pub fn server_config_from_pem_files(
    cert_chain: impl AsRef<Path>,
    key: impl AsRef<Path>,
) -> Result<Arc<ServerConfig>, Error> {
    let chain = std::fs::read(cert_chain)?;
    let key = std::fs::read(key)?;
    server_config_from_pem(&chain, &key)
}

/// What a client needs to open TLS to `host`, for the async and the blocking client alike:
/// the configuration (`configured`, else the bundled roots), offering the `alpn` protocols
/// instead of its own when some are given, and the name to send (SNI) and verify.
pub(crate) fn client_session(
    configured: Option<&Arc<ClientConfig>>,
    host: &str,
    alpn: &[&[u8]],
) -> Result<(Arc<ClientConfig>, ServerName<'static>), Error> {
    let mut config = match configured {
        Some(config) => config.clone(),
        None => default_client_config()?,
    };
    if !alpn.is_empty() {
        let mut with_alpn = (*config).clone();
        with_alpn.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config = Arc::new(with_alpn);
    }
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| tls_error(format!("invalid server name {host:?}: {e}")))?;
    Ok((config, name))
}

/// Performs the client TLS handshake, sending and verifying `name`.
pub(crate) async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    name: ServerName<'static>,
    config: Arc<ClientConfig>,
) -> Result<Transport<S>, Error> {
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, io)
        .await
        .map_err(handshake_error)?;
    Ok(Transport::ClientTls(Box::new(stream)))
}

/// A failed TLS handshake: the rustls error (which names the reason, e.g. `UnknownIssuer`)
/// when there is one, else the transport's.
pub(crate) fn handshake_error(e: std::io::Error) -> Error {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => tls_error(tls.clone()),
        None => Error::Io(e),
    }
}

/// Performs the server TLS handshake.
pub(crate) async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    config: Arc<ServerConfig>,
) -> Result<Transport<S>, Error> {
    let stream = tokio_rustls::TlsAcceptor::from(config)
        .accept(io)
        .await
        .map_err(handshake_error)?;
    Ok(Transport::ServerTls(Box::new(stream)))
}
