use clap::Parser;

#[tokio::main]
async fn main() {
    trainyard_shared::telemetry::init("info");
    let cli = trainyard_worker::cli::Cli::parse();
    match trainyard_worker::cli::execute(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            let message = trainyard_shared::text::error_chain(e.as_ref());
            tracing::error!("{message}");
            eprintln!("error: {message}");
            std::process::exit(1);
        }
    }
}
