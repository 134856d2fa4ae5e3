//! The group-coordinator binary: flags, telemetry, signals; the work is in the library.

use clap::Parser;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "cutover-group-coordinator",
    version,
    about = "Promotes Cutover's mirror groups once every member comes through the routers"
)]
struct Cli {
    #[command(flatten)]
    config: cutover_group_coordinator::GroupCoordinatorConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = cutover_telemetry::init(
        "cutover-group-coordinator",
        &cutover_telemetry::TelemetryOptions {
            otlp_endpoint: cli.config.otlp_endpoint.clone(),
            json_logs: cli.config.json_logs,
        },
    )?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cutover_telemetry::shutdown_on_signals(shutdown.clone()));
    cutover_group_coordinator::run(cli.config, shutdown).await?;
    Ok(())
}
