//! The router binary: flags, telemetry, signals; the work is in the library.

use clap::Parser;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "cutover-router",
    version,
    about = "The Kafka endpoint migrated clients use as bootstrap.servers"
)]
struct Cli {
    #[command(flatten)]
    config: cutover_router::RouterConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = cutover_telemetry::init(
        "cutover-router",
        &cutover_telemetry::TelemetryOptions {
            otlp_endpoint: cli.config.otlp_endpoint.clone(),
            json_logs: cli.config.json_logs,
        },
    )?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cutover_telemetry::shutdown_on_signals(shutdown.clone()));
    cutover_router::run(cli.config, shutdown).await?;
    Ok(())
}
