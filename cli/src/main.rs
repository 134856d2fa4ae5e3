//! `cutover`: command-line client of the orchestrator API.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = cutover::Cli::parse();
    std::process::exit(cutover::run(cli).await);
}
