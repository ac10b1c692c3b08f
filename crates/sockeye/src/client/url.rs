//! WebSocket URLs (`ws://`, `wss://`) and strict percent-decoding.

use sockeye_proto::handshake::Endpoint;

use crate::error::UrlError;

/// A parsed WebSocket URL.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WsUrl {
    /// `wss` (or `https`): TLS.
    pub tls: bool,
    /// Host name or IP literal, without IPv6 brackets.
    pub host: String,
    /// Port (80 for `ws`, 443 for `wss` when the URL has none).
    pub port: u16,
    /// Path and query, at least `/`.
    pub resource: String,
    /// The `Host` header value (with the port when it is not the scheme's default).
    pub host_header: String,
    /// `Basic` credentials from the URL's userinfo (`ws://user:pass@host/`), as an
    /// `Authorization` header value.
    pub authorization: Option<String>,
}

impl WsUrl {
    /// Where it points, for the redirect rules.
    pub(crate) fn endpoint(&self) -> Endpoint<'_> {
        Endpoint {
            secure: self.tls,
            host: &self.host,
            port: self.port,
            authority: &self.host_header,
        }
    }

    /// Parses `ws[s]://[user[:pass]@]host[:port][/path][?query]`; `http` and `https` are
    /// accepted as `ws` and `wss`, as the WHATWG WebSocket constructor does.
    ///
    /// # Errors
    ///
    /// [`UrlError`] for a malformed URL, another scheme, a missing host or a fragment (which
    /// the WHATWG constructor rejects too).
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        if url.contains('#') {
            return Err(UrlError::Fragment);
        }
        let uri: http::Uri = url.parse().map_err(|_| UrlError::Malformed)?;
        let scheme = uri
            .scheme_str()
            .ok_or(UrlError::Malformed)?
            .to_ascii_lowercase();
        let (tls, default_port) = match scheme.as_str() {
            "ws" | "http" => (false, 80),
            "wss" | "https" => (true, 443),
            other => return Err(UrlError::UnsupportedScheme(other.to_owned())),
        };
        let authority = uri.authority().ok_or(UrlError::MissingHost)?;
        let host = authority.host();
        if host.is_empty() {
            return Err(UrlError::MissingHost);
        }
        let port = authority.port_u16().unwrap_or(default_port);
        let host_header = if port == default_port {
            host.to_owned()
        } else {
            format!("{host}:{port}")
        };
        let authorization = authority
            .as_str()
            .rsplit_once('@')
            .filter(|(userinfo, _)| !userinfo.is_empty())
            .map(|(userinfo, _)| basic_authorization(userinfo))
            .transpose()?;
        let resource = uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        // RFC 6455 §3: the resource name is "/" when the path is empty, with the query after
        // it (`ws://h?x=1` asks for `/?x=1`).
        let resource = match resource {
            "" => "/".to_owned(),
            query if query.starts_with('?') => format!("/{query}"),
            path => path.to_owned(),
        };
        Ok(Self {
            tls,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            resource,
            host_header,
            authorization,
        })
    }
}

/// `Basic base64(user:password)` from a URL's percent-encoded userinfo (RFC 7617); a userinfo
/// without a password (`ws://user@host/`) has an empty one, as browsers and curl send it.
fn basic_authorization(userinfo: &str) -> Result<String, UrlError> {
    let mut decoded = percent_decode(userinfo).ok_or(UrlError::Malformed)?;
    if !userinfo.contains(':') {
        decoded.push(b':');
    }
    Ok(basic_credentials(&decoded))
}

/// `Basic base64(user-pass)` (RFC 7617 §2), for `Authorization` and `Proxy-Authorization`.
pub(crate) fn basic_credentials(user_pass: &[u8]) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    )
}

/// Decodes the `%XX` escapes of a URL component
/// ([RFC 3986 §2.1](https://www.rfc-editor.org/rfc/rfc3986#section-2.1)): user information,
/// a path. `None` when a `%` is not followed by exactly two hexadecimal digits.
///
/// ```
/// assert_eq!(sockeye::percent_decode("a%20b%2F").as_deref(), Some(&b"a b/"[..]));
/// assert_eq!(sockeye::percent_decode("%+1"), None);
/// ```
pub fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'%' {
            let [high, low] = *bytes.get(i + 1..i + 3)? else {
                return None;
            };
            // Two hex digits exactly: `u8::from_str_radix` alone would also take a sign ("%+1").
            out.push(hex_value(high)? << 4 | hex_value(low)?);
            i += 3;
        } else {
            out.push(byte);
            i += 1;
        }
    }
    Some(out)
}

/// The value of one hexadecimal digit.
fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decode_takes_exactly_two_hex_digits() {
        assert_eq!(
            percent_decode("/a%2e%2E/b%7e").as_deref(),
            Some(&b"/a../b~"[..])
        );
        assert_eq!(percent_decode("%00%ff").as_deref(), Some(&[0, 255][..]));
        // `from_str_radix` accepts a sign: "%+1" and "%-0" once decoded to 1 and 0.
        for bad in ["%", "%2", "%zz", "%+1", "%-0", "%+f", "% 1", "%1g", "a%é"] {
            assert_eq!(percent_decode(bad), None, "{bad:?}");
        }
        // The same rule for credentials in a URL.
        assert_eq!(
            WsUrl::parse("ws://us%+1er:pw@example.com/").unwrap_err(),
            UrlError::Malformed
        );
    }

    #[test]
    fn parses_urls() {
        let u = WsUrl::parse("ws://example.com/chat?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.resource.as_str()),
            ("example.com", 80, "/chat?x=1")
        );
        assert_eq!(u.host_header, "example.com");
        let u = WsUrl::parse("ws://[::1]:9001").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.resource.as_str()),
            ("::1", 9001, "/")
        );
        assert_eq!(u.host_header, "[::1]:9001");
        let u = WsUrl::parse("http://127.0.0.1:80/a").unwrap();
        assert_eq!(u.host_header, "127.0.0.1");
        assert_eq!(WsUrl::parse("ws://h/#frag"), Err(UrlError::Fragment));
        assert_eq!(
            WsUrl::parse("ftp://h/"),
            Err(UrlError::UnsupportedScheme("ftp".into()))
        );
        let u = WsUrl::parse("wss://example.com/a").unwrap();
        assert!(u.tls);
        assert_eq!((u.port, u.host_header.as_str()), (443, "example.com"));
        let u = WsUrl::parse("https://example.com:8443").unwrap();
        assert_eq!((u.tls, u.host_header.as_str()), (true, "example.com:8443"));
        let u = WsUrl::parse("ws://Aladdin:open%20sesame@h/").unwrap();
        assert_eq!(
            u.authorization.as_deref(),
            Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
        );
        assert_eq!(u.host_header, "h");
        assert_eq!(WsUrl::parse("ws://a:%zz@h/"), Err(UrlError::Malformed));
        assert_eq!(WsUrl::parse("not a url"), Err(UrlError::Malformed));
        assert_eq!(WsUrl::parse("/just/a/path"), Err(UrlError::Malformed));
    }
}
