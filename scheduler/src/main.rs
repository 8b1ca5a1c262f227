use clap::Parser;

#[tokio::main]
async fn main() {
    trainyard_shared::telemetry::init("info");
    let cli = trainyard_scheduler::cli::Cli::parse();
    match trainyard_scheduler::cli::execute(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // Reported once, here, each cause once; it may quote tenant text.
            eprintln!("error: {}", trainyard_shared::text::error_chain(e.as_ref()));
            std::process::exit(1);
        }
    }
}
