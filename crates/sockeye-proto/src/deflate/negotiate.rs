//! Negotiation of permessage-deflate
//! ([RFC 7692 §5](https://www.rfc-editor.org/rfc/rfc7692#section-5)–[§7.1](https://www.rfc-editor.org/rfc/rfc7692#section-7.1))
//! and parsing of `Sec-WebSocket-Extensions`
//! ([RFC 6455 §9.1](https://www.rfc-editor.org/rfc/rfc6455#section-9.1)).

use std::fmt;

use crate::handshake::token::is_tchar;

/// The extension's registered name.
pub const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// Smallest and largest LZ77 window, as a base-2 logarithm (§7.1.2).
const MIN_WINDOW_BITS: u8 = 8;
const MAX_WINDOW_BITS: u8 = 15;

/// What this end asks for or accepts. Compression is off unless a `DeflateConfig` is given.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// Reset the server's compression context after every message (saves the server's memory
    /// between messages, costs ratio). A client requests it; a server always grants a request
    /// and imposes it on itself when this is set (as it does by default, see
    /// [`server_context_takeover`](Self::server_context_takeover)).
    ///
    /// Default: false.
    pub server_no_context_takeover: bool,
    /// Reset the client's compression context after every message. A client declares it; a
    /// server requests it of the client when this is set (as it does by default, see
    /// [`client_context_takeover`](Self::client_context_takeover)).
    ///
    /// Default: false.
    pub client_no_context_takeover: bool,
    /// Server side: keep this server's compression context from one message to the next, when
    /// the client's offer allows it. When false the server answers every offer with
    /// `server_no_context_takeover`, which RFC 7692 §7.1.1.1 lets it add unasked ("A server MAY
    /// include the "server_no_context_takeover" extension parameter in an extension negotiation
    /// response even if the extension negotiation offer being accepted by the extension
    /// negotiation response didn't include" it).
    ///
    /// Default: false, for servers that fan messages out: without context takeover a message
    /// compresses to the same bytes on every connection with the same level and window, so a
    /// [`PreparedMessage`](crate::PreparedMessage) broadcast to N subscribers is compressed
    /// once rather than N times, and no connection keeps a compressor of its own (zlib's state
    /// for a 32 KiB window is about 300 KB: 3 GB for 10,000 subscribers once each has received
    /// a message); compression uses one compressor per thread instead. The cost is on streams
    /// of small similar messages sent to one connection: ratio, since a kept context would find
    /// their repeats, and CPU, since each message starts from an empty context (zlib-rs clears
    /// its 128 KB hash table at every reset: about 5 µs, and a repetitive 1 KiB message takes
    /// 11 µs to compress instead of 4 with takeover). Set it for a server of few connections
    /// that echo or answer such streams. Ignored by a client (which asks a server to reset with
    /// [`server_no_context_takeover`](Self::server_no_context_takeover)).
    pub server_context_takeover: bool,
    /// Server side: let the client keep its compression context from one message to the next,
    /// unless it declared `client_no_context_takeover` itself. When false the server answers
    /// every offer with `client_no_context_takeover`, which RFC 7692 §7.1.1.2 lets it add ("A
    /// server MAY include the "client_no_context_takeover" extension parameter in an extension
    /// negotiation response"): the server then inflates every client message with one
    /// decompressor per thread instead of keeping one per connection (about 40 KB each).
    ///
    /// Default: false, for the same reason as
    /// [`server_context_takeover`](Self::server_context_takeover): a server's memory per
    /// connection stays that of a plain connection whatever the clients send, at the cost of
    /// ratio on the clients' streams of small similar messages. Ignored by a client.
    pub client_context_takeover: bool,
    /// The server's LZ77 window (8–15). A client requests it; a server never uses a larger one.
    /// `None`: 15 (32 KiB).
    ///
    /// Default: `None`.
    pub server_max_window_bits: Option<u8>,
    /// The client's LZ77 window (8–15). A client offers to honour it; a server requests it.
    /// `None`: 15 (32 KiB).
    ///
    /// Default: `None`.
    pub client_max_window_bits: Option<u8>,
    /// Messages shorter than this many bytes are sent uncompressed, which saves CPU on tiny
    /// messages. RFC 7692 allows it, but some peers mishandle uncompressed messages on a
    /// compressed connection (the kosoku Autobahn runner does), so by default every message is
    /// compressed, as browsers do.
    ///
    /// Default: 0.
    pub compression_threshold: usize,
    /// zlib compression level, 0 (none) to 9 (smallest); larger values count as 9.
    ///
    /// Output is no larger than zlib's at the same level (Node's and Python's zlib): DEFLATE
    /// is done by zlib-rs, whose levels 1 and 3–6 use zlib-ng's faster strategies, which find
    /// far fewer matches in repetitive text (1.2 MB of a repeated JSON object: 7,891 bytes at
    /// zlib-rs level 6, 3,675 at zlib's). So level 1 compresses as zlib-rs level 2 (zlib's
    /// level 1: `deflate_fast`, same parameters), levels 2–7 as zlib-rs level 7 (zlib's lazy
    /// `deflate_slow` with its level-7 parameters, at about zlib's level-6 speed), 8 and 9 as
    /// themselves (zlib's parameters). The LZ77 window is the one negotiated for this end's
    /// direction (`server_max_window_bits` / `client_max_window_bits`: 15, 32 KiB, unless
    /// limited), memLevel is 8 (zlib's default, as Node's and Python's use), and each message
    /// (each fragment) ends with one sync flush (RFC 7692 §7.2.1).
    ///
    /// Default: 6.
    pub level: u32,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        Self {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_context_takeover: false,
            client_context_takeover: false,
            server_max_window_bits: None,
            client_max_window_bits: None,
            compression_threshold: 0,
            level: 6,
        }
    }
}

impl DeflateConfig {
    /// The client's `Sec-WebSocket-Extensions` offer.
    pub fn offer(&self) -> String {
        let mut offer = String::from(PERMESSAGE_DEFLATE);
        if self.server_no_context_takeover {
            offer.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            offer.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            offer.push_str(&format!("; server_max_window_bits={}", clamp_bits(bits)));
        }
        // Always offered, so that a server may ask for a smaller client window (§7.1.2.2).
        match self.client_max_window_bits {
            Some(bits) => offer.push_str(&format!("; client_max_window_bits={}", clamp_bits(bits))),
            None => offer.push_str("; client_max_window_bits"),
        }
        offer
    }

    /// Server side: picks the first acceptable `permessage-deflate` offer from the request's
    /// `Sec-WebSocket-Extensions` values. Malformed offers, and offers with unknown, duplicate or
    /// out-of-range parameters, are declined (§5: "the server ... MUST decline").
    ///
    /// `None`: no acceptable offer; the connection goes on without compression.
    pub fn accept_offer<'a>(
        &self,
        headers: impl IntoIterator<Item = &'a [u8]>,
    ) -> Option<DeflateParams> {
        let joined = join_header_values(headers);
        let extensions = parse_extensions(&joined).ok()?;
        extensions
            .iter()
            .filter(|ext| ext.name == PERMESSAGE_DEFLATE)
            .find_map(|ext| self.accept_one(ext))
    }

    fn accept_one(&self, offer: &Extension) -> Option<DeflateParams> {
        let offer = Params::parse(offer, Side::Offer).ok()?;
        let server_cap = self
            .server_max_window_bits
            .map_or(MAX_WINDOW_BITS, clamp_bits);
        let server_max_window_bits = match offer.server_max_window_bits {
            Some(Some(requested)) => requested.min(server_cap),
            _ => server_cap,
        };
        let client_max_window_bits = match offer.client_max_window_bits {
            // The client did not offer client_max_window_bits: the server must not send it
            // (§7.1.2.2), and the client may use a 32 KiB window.
            None => None,
            Some(offered) => {
                let offered = offered.unwrap_or(MAX_WINDOW_BITS);
                let wanted = self
                    .client_max_window_bits
                    .map_or(MAX_WINDOW_BITS, clamp_bits);
                (wanted < offered || offered < MAX_WINDOW_BITS).then(|| wanted.min(offered))
            }
        };
        Some(DeflateParams {
            server_no_context_takeover: offer.server_no_context_takeover
                || self.server_no_context_takeover
                || !self.server_context_takeover,
            client_no_context_takeover: offer.client_no_context_takeover
                || self.client_no_context_takeover
                || !self.client_context_takeover,
            server_max_window_bits,
            client_max_window_bits: client_max_window_bits.unwrap_or(MAX_WINDOW_BITS),
            include_server_max_window_bits: offer.server_max_window_bits.is_some()
                || server_max_window_bits < MAX_WINDOW_BITS,
            include_client_max_window_bits: client_max_window_bits.is_some(),
        })
    }

    /// Client side: validates the server's `Sec-WebSocket-Extensions` response to
    /// [`offer`](Self::offer). `Ok(None)` when the server declined.
    ///
    /// # Errors
    ///
    /// A response that is malformed, names another extension, repeats `permessage-deflate` or
    /// a parameter, or grants what was not offered (§5: "the client MUST _Fail the WebSocket
    /// Connection_").
    pub fn check_response<'a>(
        &self,
        headers: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Option<DeflateParams>, ExtensionError> {
        let joined = join_header_values(headers);
        if joined.is_empty() {
            return Ok(None);
        }
        let extensions = parse_extensions(&joined)?;
        let [ext] = extensions.as_slice() else {
            return Err(ExtensionError::NotOffered);
        };
        if ext.name != PERMESSAGE_DEFLATE {
            return Err(ExtensionError::NotOffered);
        }
        let response = Params::parse(ext, Side::Response)?;
        let server_max_window_bits = match response.server_max_window_bits {
            Some(Some(bits)) => {
                if self
                    .server_max_window_bits
                    .is_some_and(|asked| bits > clamp_bits(asked))
                {
                    return Err(ExtensionError::InvalidParameter);
                }
                bits
            }
            Some(None) => return Err(ExtensionError::InvalidParameter),
            None => {
                if self
                    .server_max_window_bits
                    .is_some_and(|b| clamp_bits(b) < MAX_WINDOW_BITS)
                {
                    // §7.1.2.1: the server must include it to accept an offer that has it.
                    return Err(ExtensionError::InvalidParameter);
                }
                MAX_WINDOW_BITS
            }
        };
        if self.server_no_context_takeover && !response.server_no_context_takeover {
            return Err(ExtensionError::InvalidParameter);
        }
        let client_max_window_bits = match response.client_max_window_bits {
            Some(Some(bits)) => {
                if self
                    .client_max_window_bits
                    .is_some_and(|offered| bits > clamp_bits(offered))
                {
                    return Err(ExtensionError::InvalidParameter);
                }
                bits
            }
            Some(None) => return Err(ExtensionError::InvalidParameter),
            None => self
                .client_max_window_bits
                .map_or(MAX_WINDOW_BITS, clamp_bits),
        };
        Ok(Some(DeflateParams {
            server_no_context_takeover: response.server_no_context_takeover,
            client_no_context_takeover: response.client_no_context_takeover
                || self.client_no_context_takeover,
            server_max_window_bits,
            client_max_window_bits,
            include_server_max_window_bits: response.server_max_window_bits.is_some(),
            include_client_max_window_bits: response.client_max_window_bits.is_some(),
        }))
    }
}

/// The parameters both ends agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server resets its compression context after every message.
    pub server_no_context_takeover: bool,
    /// The client resets its compression context after every message.
    pub client_no_context_takeover: bool,
    /// The server's LZ77 window (8–15).
    pub server_max_window_bits: u8,
    /// The client's LZ77 window (8–15).
    pub client_max_window_bits: u8,
    include_server_max_window_bits: bool,
    include_client_max_window_bits: bool,
}

impl DeflateParams {
    /// Default parameters: context takeover on both sides, 32 KiB windows.
    pub const fn new() -> Self {
        Self {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: MAX_WINDOW_BITS,
            client_max_window_bits: MAX_WINDOW_BITS,
            include_server_max_window_bits: false,
            include_client_max_window_bits: false,
        }
    }
}

impl Default for DeflateParams {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for DeflateParams {
    /// The `Sec-WebSocket-Extensions` value that describes the agreement (the server's response).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PERMESSAGE_DEFLATE)?;
        if self.server_no_context_takeover {
            f.write_str("; server_no_context_takeover")?;
        }
        if self.client_no_context_takeover {
            f.write_str("; client_no_context_takeover")?;
        }
        if self.include_server_max_window_bits {
            write!(
                f,
                "; server_max_window_bits={}",
                self.server_max_window_bits
            )?;
        }
        if self.include_client_max_window_bits {
            write!(
                f,
                "; client_max_window_bits={}",
                self.client_max_window_bits
            )?;
        }
        Ok(())
    }
}

/// A `Sec-WebSocket-Extensions` response the client cannot accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExtensionError {
    /// The header does not follow the RFC 6455 §9.1 grammar.
    Malformed,
    /// The server selected an extension that was not offered, or more than one.
    NotOffered,
    /// An unknown, duplicate, out-of-range or not-offered parameter.
    InvalidParameter,
}

impl fmt::Display for ExtensionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed => f.write_str("malformed sec-websocket-extensions"),
            Self::NotOffered => f.write_str("server selected an extension that was not offered"),
            Self::InvalidParameter => f.write_str("invalid permessage-deflate parameter"),
        }
    }
}

impl std::error::Error for ExtensionError {}

/// Joins the values of a repeated header with commas, as RFC 7230 §3.2.2 allows for lists.
fn join_header_values<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut joined = Vec::new();
    for value in values {
        if !joined.is_empty() {
            joined.push(b',');
        }
        joined.extend_from_slice(value);
    }
    joined
}

fn clamp_bits(bits: u8) -> u8 {
    bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Offer,
    Response,
}

/// The parameters of one permessage-deflate offer or response. The window-bits fields are
/// `Some(None)` when present without a value.
#[derive(Debug, Default)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<Option<u8>>,
    client_max_window_bits: Option<Option<u8>>,
}

impl Params {
    fn parse(ext: &Extension, side: Side) -> Result<Self, ExtensionError> {
        let mut params = Self::default();
        let mut seen = [false; 4];
        for (name, value) in &ext.params {
            let index = match name.as_str() {
                "server_no_context_takeover" => 0,
                "client_no_context_takeover" => 1,
                "server_max_window_bits" => 2,
                "client_max_window_bits" => 3,
                _ => return Err(ExtensionError::InvalidParameter),
            };
            // §7: "A server MUST decline an extension negotiation offer ... [with] multiple
            // parameters with the same name"; the client fails on such a response.
            if std::mem::replace(&mut seen[index], true) {
                return Err(ExtensionError::InvalidParameter);
            }
            let bits = match value {
                None => None,
                Some(v) => {
                    // §7.1.2: "a decimal integer value in the range 8 to 15 ... without leading
                    // zeroes".
                    if v.is_empty() || v.len() > 2 || v.starts_with('0') {
                        return Err(ExtensionError::InvalidParameter);
                    }
                    let bits: u8 = v.parse().map_err(|_| ExtensionError::InvalidParameter)?;
                    if !(MIN_WINDOW_BITS..=MAX_WINDOW_BITS).contains(&bits) {
                        return Err(ExtensionError::InvalidParameter);
                    }
                    Some(bits)
                }
            };
            match index {
                0 | 1 if bits.is_some() => return Err(ExtensionError::InvalidParameter),
                0 => params.server_no_context_takeover = true,
                1 => params.client_no_context_takeover = true,
                2 if bits.is_none() => return Err(ExtensionError::InvalidParameter),
                2 => params.server_max_window_bits = Some(bits),
                _ if bits.is_none() && side == Side::Response => {
                    return Err(ExtensionError::InvalidParameter)
                }
                _ => params.client_max_window_bits = Some(bits),
            }
        }
        Ok(params)
    }
}

/// One extension of a `Sec-WebSocket-Extensions` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Extension {
    pub(crate) name: String,
    pub(crate) params: Vec<(String, Option<String>)>,
}

/// Parses `extension *( "," extension )`, `extension = token *( ";" token [ "=" value ] )`, where
/// a value is a token or a quoted string holding a token (RFC 6455 §9.1).
pub(crate) fn parse_extensions(input: &[u8]) -> Result<Vec<Extension>, ExtensionError> {
    let mut p = Cursor { input, pos: 0 };
    let mut list = Vec::new();
    loop {
        p.skip_ws();
        // Empty list elements are allowed by the #rule (RFC 7230 §7).
        if p.eat(b',') {
            continue;
        }
        if p.at_end() {
            break;
        }
        let name = p.token()?;
        let mut params = Vec::new();
        loop {
            p.skip_ws();
            if !p.eat(b';') {
                break;
            }
            p.skip_ws();
            let key = p.token()?;
            p.skip_ws();
            let value = if p.eat(b'=') {
                p.skip_ws();
                Some(if p.peek() == Some(b'"') {
                    p.quoted_token()?
                } else {
                    p.token()?
                })
            } else {
                None
            };
            params.push((key, value));
        }
        list.push(Extension { name, params });
        p.skip_ws();
        if p.at_end() {
            break;
        }
        if !p.eat(b',') {
            return Err(ExtensionError::Malformed);
        }
    }
    if list.is_empty() {
        return Err(ExtensionError::Malformed);
    }
    Ok(list)
}

struct Cursor<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn token(&mut self) -> Result<String, ExtensionError> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(ExtensionError::Malformed);
        }
        Ok(String::from_utf8_lossy(&self.input[start..self.pos]).into_owned())
    }

    fn quoted_token(&mut self) -> Result<String, ExtensionError> {
        self.pos += 1; // opening quote
        let mut value = Vec::new();
        loop {
            match self.peek() {
                None => return Err(ExtensionError::Malformed),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let b = self.peek().ok_or(ExtensionError::Malformed)?;
                    value.push(b);
                    self.pos += 1;
                }
                Some(b) => {
                    value.push(b);
                    self.pos += 1;
                }
            }
        }
        // §9.1: "the value MUST conform to the 'token' ABNF" after unquoting.
        if value.is_empty() || !value.iter().all(|&b| is_tchar(b)) {
            return Err(ExtensionError::Malformed);
        }
        Ok(String::from_utf8_lossy(&value).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(config: &DeflateConfig, offer: &str) -> Option<DeflateParams> {
        config.accept_offer([offer.as_bytes()])
    }

    #[test]
    fn parses_extension_lists() {
        let list = parse_extensions(
            b"permessage-deflate; client_max_window_bits; server_max_window_bits=\"10\", x-foo , permessage-deflate",
        )
        .unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list[0].params[0], ("client_max_window_bits".into(), None));
        assert_eq!(
            list[0].params[1],
            ("server_max_window_bits".into(), Some("10".into()))
        );
        assert_eq!(list[1].name, "x-foo");
        for bad in [
            &b""[..],
            b";",
            b"a;",
            b"a b",
            b"a; b=",
            b"a; b=\"\"",
            b"a; b=\"1 2\"",
            b"a; b=\"x",
        ] {
            assert!(
                parse_extensions(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn server_accepts_first_valid_offer() {
        let config = DeflateConfig::default();
        let params = accept(
            &config,
            "permessage-deflate; server_max_window_bits=16, permessage-deflate; server_max_window_bits=10; client_max_window_bits",
        )
        .unwrap();
        assert_eq!(params.server_max_window_bits, 10);
        assert_eq!(params.client_max_window_bits, 15);
        assert_eq!(
            params.to_string(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10"
        );
    }

    #[test]
    fn server_declines_malformed_and_duplicate_offers() {
        let config = DeflateConfig::default();
        for offer in [
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=08",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; unknown",
            "permessage-deflate; ;",
            "x-other",
        ] {
            assert_eq!(accept(&config, offer), None, "{offer}");
        }
    }

    #[test]
    fn server_grants_requests_and_imposes_its_config() {
        let config = DeflateConfig {
            client_no_context_takeover: true,
            client_max_window_bits: Some(10),
            ..DeflateConfig::default()
        };
        let params = accept(
            &config,
            "permessage-deflate; server_no_context_takeover; client_max_window_bits",
        )
        .unwrap();
        assert!(params.server_no_context_takeover);
        assert!(params.client_no_context_takeover);
        assert_eq!(params.client_max_window_bits, 10);
        assert_eq!(
            params.to_string(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=10"
        );
        // Without client_max_window_bits in the offer the server cannot limit the client.
        let params = accept(&config, "permessage-deflate").unwrap();
        assert_eq!(params.client_max_window_bits, 15);
        assert!(!params.to_string().contains("client_max_window_bits"));
    }

    #[test]
    fn a_default_server_resets_both_contexts_unasked() {
        // What browsers offer: RFC 7692 §7.1.1.1 and §7.1.1.2 let the server add both
        // no_context_takeover parameters; it cannot name client_max_window_bits unless offered.
        for offer in [
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate",
        ] {
            let params = accept(&DeflateConfig::default(), offer).unwrap();
            assert_eq!(
                params.to_string(),
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
            );
            let agreed = DeflateConfig::default()
                .check_response([params.to_string().as_bytes()])
                .unwrap()
                .unwrap();
            assert!(agreed.server_no_context_takeover && agreed.client_no_context_takeover);
        }
        // Allowing takeover leaves what the client asked for.
        let config = DeflateConfig {
            server_context_takeover: true,
            ..DeflateConfig::default()
        };
        let params = accept(&config, "permessage-deflate").unwrap();
        assert_eq!(
            params.to_string(),
            "permessage-deflate; client_no_context_takeover"
        );
        let params = accept(&config, "permessage-deflate; server_no_context_takeover").unwrap();
        assert!(params.server_no_context_takeover);
        let config = DeflateConfig {
            client_context_takeover: true,
            ..DeflateConfig::default()
        };
        let params = accept(&config, "permessage-deflate; client_no_context_takeover").unwrap();
        assert!(params.client_no_context_takeover);
        assert_eq!(
            accept(&config, "permessage-deflate").unwrap().to_string(),
            "permessage-deflate; server_no_context_takeover"
        );
    }

    #[test]
    fn client_offer_and_response_round_trip_every_combination() {
        for bits in [None, Some(8), Some(9), Some(12), Some(15)] {
            for (snct, cnct) in [(false, false), (true, false), (false, true), (true, true)] {
                let client = DeflateConfig {
                    server_no_context_takeover: snct,
                    client_no_context_takeover: cnct,
                    server_max_window_bits: bits,
                    client_max_window_bits: bits,
                    ..DeflateConfig::default()
                };
                // A server that allows context takeover: the agreement is what the client asked.
                let server = DeflateConfig {
                    server_context_takeover: true,
                    client_context_takeover: true,
                    ..DeflateConfig::default()
                };
                let offer = client.offer();
                let accepted = server.accept_offer([offer.as_bytes()]).expect(&offer);
                let response = accepted.to_string();
                let agreed = client
                    .check_response([response.as_bytes()])
                    .unwrap()
                    .unwrap();
                assert_eq!(
                    agreed.server_no_context_takeover, snct,
                    "{offer} -> {response}"
                );
                assert_eq!(
                    agreed.client_no_context_takeover, cnct,
                    "{offer} -> {response}"
                );
                assert_eq!(agreed.server_max_window_bits, bits.unwrap_or(15));
                assert_eq!(agreed.client_max_window_bits, bits.unwrap_or(15));
                assert_eq!(
                    agreed.server_max_window_bits,
                    accepted.server_max_window_bits
                );
                assert_eq!(
                    agreed.client_max_window_bits,
                    accepted.client_max_window_bits
                );
            }
        }
    }

    #[test]
    fn client_rejects_bad_responses() {
        let client = DeflateConfig {
            server_max_window_bits: Some(10),
            client_max_window_bits: Some(12),
            ..DeflateConfig::default()
        };
        for response in [
            "x-other",
            "permessage-deflate, permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=11",
            "permessage-deflate",
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=13",
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits",
            "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=10; foo",
            "permessage-deflate;",
        ] {
            assert!(
                client.check_response([response.as_bytes()]).is_err(),
                "{response}"
            );
        }
        assert_eq!(client.check_response([]), Ok(None));
    }
}
