//! What a stage does with an error its consumer's `recv` returns.
//!
//! Why: librdkafka recovers by itself from every consumer error but a fatal one (a broker
//! restarting in a rolling upgrade, a dropped connection, a partition leader moving). It
//! reports them as informational errors; a stage that stopped on them would crash on
//! every routine broker restart, and on a transport blip. So stages log, count and wait
//! them out; only a fatal error (the client cannot go on: a fenced idempotent producer
//! state, a broken group membership librdkafka gives up on) stops a stage.

use std::time::Duration;

use rdkafka::error::KafkaError;

/// How long a stage pauses after a non-fatal consumer error, so a broker outage does not
/// spin the loop (librdkafka reports the same failure repeatedly while it reconnects).
pub const CONSUMER_ERROR_BACKOFF: Duration = Duration::from_millis(200);

/// Whether a consumer error means the client cannot go on.
pub fn is_fatal(e: &KafkaError) -> bool {
    matches!(e, KafkaError::MessageConsumptionFatal(_))
}

/// Waits out a consumer error librdkafka recovers from (logs it, pauses
/// [`CONSUMER_ERROR_BACKOFF`]); gives a fatal one back for the stage to stop on. The
/// caller counts it in its own stage's metric.
pub async fn wait_out(e: KafkaError, consumer: &'static str) -> Result<(), KafkaError> {
    if is_fatal(&e) {
        return Err(e);
    }
    tracing::warn!(error = %e, consumer, "consumer error; librdkafka recovers by itself");
    tokio::time::sleep(CONSUMER_ERROR_BACKOFF).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use rdkafka::types::RDKafkaErrorCode;

    use super::*;

    #[test]
    fn only_fatal_consumption_errors_are_fatal() {
        let transport = KafkaError::MessageConsumption(RDKafkaErrorCode::BrokerTransportFailure);
        let all_down = KafkaError::MessageConsumption(RDKafkaErrorCode::AllBrokersDown);
        let fatal = KafkaError::MessageConsumptionFatal(RDKafkaErrorCode::Fatal);
        assert!(!is_fatal(&transport));
        assert!(!is_fatal(&all_down));
        assert!(is_fatal(&fatal));
    }
}
