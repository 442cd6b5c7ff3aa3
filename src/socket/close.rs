//! Every close code the server sends, on any channel, and how a failed read becomes one.
//!
//! | code | when | channel |
//! | --- | --- | --- |
//! | the peer's own | the peer closed first: its close frame is echoed (RFC 6455 §5.5.1) | all |
//! | 1000 | legacy `connection_terminate` | graphql-ws |
//! | 1001 | shutdown; silent for the inactivity timeout | all |
//! | 1002 | a frame that breaks RFC 6455 (reserved bits, unmasked, bad opcode or close code, oversized or fragmented control frame) | all |
//! | 1007 | text (or a close reason) that is not UTF-8 | all |
//! | 1008 | the token expired | `/ws` |
//! | 1009 | a message over `WS_MAX_MESSAGE_BYTES` | all |
//! | 1013 | too slow to keep up; too many connections for this user; no room left for anonymous connections | all; graphql-ws |
//! | 44xx | the graphql-transport-ws codes below | graphql-ws |

use std::borrow::Cow;

use tungstenite::error::ProtocolError;

pub const NORMAL: u16 = 1000;
pub const GOING_AWAY: u16 = 1001;
pub const PROTOCOL_ERROR: u16 = 1002;
pub const INVALID_PAYLOAD: u16 = 1007;
pub const POLICY_VIOLATION: u16 = 1008;
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// "Try again later": retried by graphql-ws clients, with backoff.
pub const TRY_AGAIN_LATER: u16 = 1013;

// graphql-transport-ws (the graphql-ws library's PROTOCOL.md).
pub const BAD_REQUEST: u16 = 4400;
pub const UNAUTHORIZED: u16 = 4401;
pub const FORBIDDEN: u16 = 4403;
pub const SUBPROTOCOL_NOT_ACCEPTABLE: u16 = 4406;
pub const INIT_TIMEOUT: u16 = 4408;
pub const SUBSCRIBER_EXISTS: u16 = 4409;
pub const TOO_MANY_INITS: u16 = 4429;

/// A close frame to send: a code and a reason (cut to fit when sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: Cow<'static, str>,
}

impl Close {
    pub fn new(code: u16, reason: impl Into<Cow<'static, str>>) -> Self {
        Self { code, reason: reason.into() }
    }

    pub fn shutdown() -> Self {
        Self::new(GOING_AWAY, "server shutting down")
    }

    pub fn inactive() -> Self {
        Self::new(GOING_AWAY, "inactive")
    }

    pub fn too_big() -> Self {
        Self::new(MESSAGE_TOO_BIG, "message too big")
    }

    pub fn too_many_connections() -> Self {
        Self::new(TRY_AGAIN_LATER, "too many connections for this user")
    }
}

/// Close reasons travel in a control frame of at most 125 bytes, two of which are the code
/// (RFC 6455 §5.5): cut the reason at a character boundary within 123.
pub fn close_reason(reason: &str) -> &str {
    const MAX: usize = 123;
    if reason.len() <= MAX {
        return reason;
    }
    let mut end = MAX;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// What a failed read calls for: a close frame when the peer broke the protocol (it is owed the
/// reason, RFC 6455 §7.1.7), nothing when it is simply gone.
pub fn for_read_error(error: axum::Error) -> Option<Close> {
    let inner = error.into_inner();
    match inner.downcast_ref::<tungstenite::Error>()? {
        tungstenite::Error::Capacity(_) => Some(Close::too_big()),
        tungstenite::Error::Utf8(_) => Some(Close::new(INVALID_PAYLOAD, "invalid UTF-8")),
        // The TCP connection ended without a close frame: nobody to tell.
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        tungstenite::Error::Protocol(violation) => Some(Close::new(PROTOCOL_ERROR, violation.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_in_a_control_frame() {
        assert_eq!(close_reason("short"), "short");
        let long = "é".repeat(100); // 200 bytes
        let cut = close_reason(&long);
        assert!(cut.len() <= 123 && long.starts_with(cut));
    }

    #[test]
    fn read_errors_map_to_close_codes() {
        let code = |e: tungstenite::Error| for_read_error(axum::Error::new(e)).map(|c| c.code);
        assert_eq!(code(tungstenite::Error::Utf8("bad".into())), Some(INVALID_PAYLOAD));
        assert_eq!(code(tungstenite::Error::Protocol(ProtocolError::NonZeroReservedBits)), Some(PROTOCOL_ERROR));
        assert_eq!(code(tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)), None);
        assert_eq!(code(tungstenite::Error::ConnectionClosed), None);
    }
}
