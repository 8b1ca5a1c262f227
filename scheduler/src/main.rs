use clap::Parser;

#[tokio::main]
async fn main() {
    trainyard_shared::telemetry::init("info");
    let cli = trainyard_scheduler::cli::Cli::parse();
    match trainyard_scheduler::cli::execute(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // Reported once, here; the message may quote tenant text.
            let message = format!("{e:#}");
            eprintln!(
                "error: {}",
                trainyard_shared::text::escape_for_terminal(&message)
            );
            std::process::exit(1);
        }
    }
}
