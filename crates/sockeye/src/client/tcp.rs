//! The TCP connection of a client: straight to the server, or through the proxy the
//! configuration names for it.

use tokio::net::TcpStream;

use crate::client::proxy::connect_via;
use crate::client::url::WsUrl;
use crate::config::WebSocketConfig;
use crate::error::{Error, ProxyError};

/// Opens a TCP connection to `url`'s host, through the proxy `config` names for it, within
/// the connect timeout.
pub(crate) async fn connect_tcp(url: &WsUrl, config: &WebSocketConfig) -> Result<TcpStream, Error> {
    let proxy = config
        .proxy
        .proxy_for(url)
        .map_err(|e| ProxyError::InvalidUrl(Box::new(e)))?;
    match proxy {
        Some(proxy) => {
            tracing::debug!(?proxy, host = %url.host, port = url.port, "connecting through proxy");
            connect_via(&proxy, &url.host, url.port, config.connect_timeout).await
        }
        None => tokio::time::timeout(
            config.connect_timeout,
            TcpStream::connect((url.host.as_str(), url.port)),
        )
        .await
        .map_err(|_| Error::ConnectTimeout)?
        .map_err(Error::Io),
    }
}
