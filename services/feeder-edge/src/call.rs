//! Whole-call refusals: the request itself is refused (protocol: "whole-call failures use
//! the gRPC status of the call"). One enum, and the one place where a refusal is counted
//! (`feeder_edge_requests_refused_total{reason}`) and turned into a status.

use std::time::Duration;

use tonic::{Code, Status};

use crate::decode::DecodeRefusal;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallRefusal {
    /// No frames.
    Empty,
    /// More than `limit` frames (seen while decoding; decoding stopped there).
    TooManyFrames { limit: usize },
    /// The encoded request is longer than the decode limit (refused from its 5-byte gRPC
    /// header, before any of it is buffered).
    TooLarge { limit: usize },
    /// Not a `PushRequest` encoding.
    Malformed,
    /// A `PushStream` sent no request for this long and was ended (retryable: open a new
    /// stream when there is data).
    StreamIdle(Duration),
}

impl CallRefusal {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Empty => "empty_request",
            Self::TooManyFrames { .. } => "too_many_frames",
            Self::TooLarge { .. } => "request_too_large",
            Self::Malformed => "malformed_request",
            Self::StreamIdle(_) => "stream_idle",
        }
    }

    pub fn code(&self) -> Code {
        match self {
            Self::StreamIdle(_) => Code::Unavailable,
            _ => Code::InvalidArgument,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::Empty => "request has no frames".into(),
            Self::TooManyFrames { limit } => {
                format!("request has more than the limit of {limit} frames")
            }
            Self::TooLarge { limit } => format!("request exceeds the limit of {limit} bytes"),
            Self::Malformed => "malformed PushRequest".into(),
            Self::StreamIdle(d) => format!(
                "stream idle for {} s; open a new one when there is data",
                d.as_secs()
            ),
        }
    }

    /// Counts the refusal and gives the call's status.
    pub fn into_status(self) -> Status {
        metrics::counter!("feeder_edge_requests_refused_total", "reason" => self.reason())
            .increment(1);
        Status::new(self.code(), self.message())
    }
}

impl From<DecodeRefusal> for CallRefusal {
    fn from(r: DecodeRefusal) -> Self {
        match r {
            DecodeRefusal::TooManyFrames { limit } => Self::TooManyFrames { limit },
            DecodeRefusal::Malformed => Self::Malformed,
        }
    }
}
