//! Per-frame ack codes: gRPC status code numbers, as the device contract fixes them.

/// The code in a `FrameAck`. Retryable codes are 8 and 14; the others are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum AckCode {
    Ok = 0,
    InvalidArgument = 3,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Unavailable = 14,
    Unauthenticated = 16,
}

impl AckCode {
    pub const ALL: [AckCode; 6] = [
        AckCode::Ok,
        AckCode::InvalidArgument,
        AckCode::PermissionDenied,
        AckCode::ResourceExhausted,
        AckCode::Unavailable,
        AckCode::Unauthenticated,
    ];

    pub fn as_i32(self) -> i32 {
        self as i32
    }

    pub fn from_i32(code: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_i32() == code)
    }

    /// Whether a device should resend the same frame (same seq) after backing off.
    pub fn is_retryable(self) -> bool {
        matches!(self, AckCode::ResourceExhausted | AckCode::Unavailable)
    }

    /// A bounded, metric-friendly name.
    pub fn name(self) -> &'static str {
        match self {
            AckCode::Ok => "ok",
            AckCode::InvalidArgument => "invalid_argument",
            AckCode::PermissionDenied => "permission_denied",
            AckCode::ResourceExhausted => "resource_exhausted",
            AckCode::Unavailable => "unavailable",
            AckCode::Unauthenticated => "unauthenticated",
        }
    }
}
