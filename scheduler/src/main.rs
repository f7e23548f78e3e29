//! The scheduler binary: parse the configuration, set up logs, run.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let config = scheduler::Config::parse();
    chat_core::telemetry::init();
    let shutdown = chat_core::shutdown::on_signal();
    match scheduler::Scheduler::bind(config).await {
        Ok(scheduler) => {
            scheduler.run(shutdown).await;
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "scheduler failed");
            ExitCode::FAILURE
        }
    }
}
