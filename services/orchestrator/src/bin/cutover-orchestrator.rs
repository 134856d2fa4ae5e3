//! The orchestrator binary: flags, telemetry, signals; the work is in the library.

use clap::Parser;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "cutover-orchestrator",
    version,
    about = "Cutover's control plane and public API"
)]
struct Cli {
    #[command(flatten)]
    config: cutover_orchestrator::OrchestratorConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = cutover_telemetry::init(
        "cutover-orchestrator",
        &cutover_telemetry::TelemetryOptions {
            otlp_endpoint: cli.config.otlp_endpoint.clone(),
            json_logs: cli.config.json_logs,
        },
    )?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cutover_telemetry::shutdown_on_signals(shutdown.clone()));
    cutover_orchestrator::run(cli.config, shutdown).await?;
    Ok(())
}
