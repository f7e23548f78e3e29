//! The scheduler binary: parse the configuration, then run.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = scheduler::Config::parse();
    let bind = scheduler::Scheduler::bind(config);
    chat_core::serve::main("scheduler", bind, scheduler::Scheduler::run).await
}
