//! `feeder`: parses the command line and hands over to the library.

fn main() -> std::process::ExitCode {
    let mut cli = match feeder::config_file::parse_from(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // The demo prints its own progress; keep stage logs to warnings unless asked.
    if matches!(cli.command, feeder::cli::Command::Demo(_))
        && std::env::var_os("FEEDER_LOG").is_none()
        && cli.log.filter == "info"
    {
        cli.log.filter = "warn".into();
    }
    feeder::telemetry::init_logging(&cli.log);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("feeder: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(feeder::commands::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("feeder: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
