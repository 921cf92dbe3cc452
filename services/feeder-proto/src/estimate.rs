//! The `estimates` dataset's names of [`EstimateMethod`] and [`EstimateStatus`], in one
//! place for the stream (metrics) and the writer (rows).

use crate::pipeline::{EstimateMethod, EstimateStatus};

impl EstimateMethod {
    /// `register_proration`, `linear`, `profile`; `unknown` for the unspecified value.
    pub fn name(self) -> &'static str {
        match self {
            EstimateMethod::RegisterProration => "register_proration",
            EstimateMethod::Linear => "linear",
            EstimateMethod::Profile => "profile",
            EstimateMethod::Unspecified => "unknown",
        }
    }

    /// The name of a method code as a record carries it (`unknown` when not one).
    pub fn name_of(code: i32) -> &'static str {
        Self::try_from(code).map_or("unknown", Self::name)
    }
}

impl EstimateStatus {
    /// `estimated`, `superseded`; `unknown` for the unspecified value.
    pub fn name(self) -> &'static str {
        match self {
            EstimateStatus::Estimated => "estimated",
            EstimateStatus::Superseded => "superseded",
            EstimateStatus::Unspecified => "unknown",
        }
    }

    /// The name of a status code as a record carries it (`unknown` when not one).
    pub fn name_of(code: i32) -> &'static str {
        Self::try_from(code).map_or("unknown", Self::name)
    }
}
