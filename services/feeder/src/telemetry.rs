//! Logging.

use tracing_subscriber::EnvFilter;

use crate::cli::LogArgs;

pub fn init_logging(args: &LogArgs) {
    let filter = EnvFilter::try_new(&args.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if args.log_json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
