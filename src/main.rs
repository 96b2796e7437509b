//! The `baton` binary: parse the command line, load the configuration, set up logging, run.
//! Every failure ends as one line on stderr and a non-zero exit, never a panic trace.

use clap::Parser;

use baton::cli::{self, Cli};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let settings = match cli.settings() {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("baton: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    baton::telemetry::init(&settings.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("baton: cannot start the async runtime: {err}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(cli::run(cli, settings)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("baton: {err}");
            std::process::ExitCode::from(2)
        }
    }
}
