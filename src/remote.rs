//! What reaching a browser over the network needs, shared by the `/json/version` lookup
//! (`browser`) and the WebSocket handshake (`cdp::socket`): the [`Dial`] (URL, extra
//! headers, TLS), the default TLS client configuration, and URLs made fit for messages.
//!
//! The default [`rustls::ClientConfig`] uses the `ring` provider (lighter to build than
//! `aws-lc-rs`) and the Mozilla roots of `webpki-roots`, so a pool trusts the same public
//! CAs on every machine, whatever the system store holds. An endpoint that must trust
//! something else (a private CA, a self-signed proxy) brings its own config through
//! [`Endpoint::tls_config`](crate::browser::Endpoint::tls_config).
//!
//! Never installs a process-wide crypto provider (an application may have chosen its
//! own), and never puts a query value or a header value in a message: they carry tokens.

use std::sync::{Arc, OnceLock};

use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::error::{Error, ErrorKind, Result};

/// Where and how to open one browser WebSocket.
#[derive(Clone)]
pub(crate) struct Dial {
    /// `ws://` or `wss://`, with any query (a token) the endpoint gave.
    pub(crate) url: String,
    /// Extra handshake headers (authentication).
    pub(crate) headers: Vec<(String, String)>,
    /// The TLS configuration for `wss://`; `None` means [`default_config`].
    pub(crate) tls: Option<Arc<ClientConfig>>,
}

impl Dial {
    /// A plain dial: the URL alone.
    pub(crate) fn url(url: &str) -> Dial {
        Dial {
            url: url.to_owned(),
            headers: Vec::new(),
            tls: None,
        }
    }
}

/// `url` with every query value replaced by `***`, for messages and logs.
pub(crate) fn redact(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) => format!("{key}=***"),
            None => "***".to_owned(),
        })
        .collect();
    format!("{base}?{}", pairs.join("&"))
}

/// The configuration used for `wss://` and `https://` when the endpoint sets none.
pub(crate) fn default_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            Arc::new(client_config(roots))
        })
        .clone()
}

/// A client configuration on the `ring` provider that trusts `roots`.
///
/// Public for tests and users who build their own trust store; see
/// [`Endpoint::tls_config`](crate::browser::Endpoint::tls_config).
pub fn client_config(roots: rustls::RootCertStore) -> ClientConfig {
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Wraps `tcp` in TLS to `host` (checked against the server's certificate).
pub(crate) async fn tls_connect(
    tcp: TcpStream,
    host: &str,
    config: Arc<ClientConfig>,
) -> Result<TlsStream<TcpStream>> {
    // `[::1]` in a URL is `::1` in a certificate.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(bare.to_owned()).map_err(|e| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("`{host}` is not a name TLS can check"),
        )
        .with_source(e)
    })?;
    TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| {
            Error::new(
                ErrorKind::BrowserUnavailable,
                format!("TLS handshake with {host} failed (untrusted certificate? see Endpoint::tls_config)"),
            )
            .with_source(e)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_query_values_only() {
        assert_eq!(
            redact("ws://h:1/devtools/browser/x"),
            "ws://h:1/devtools/browser/x"
        );
        assert_eq!(
            redact("wss://h:1/x?token=secret&a=b"),
            "wss://h:1/x?token=***&a=***"
        );
        assert_eq!(redact("wss://h:1/x?secret"), "wss://h:1/x?***");
    }
}
