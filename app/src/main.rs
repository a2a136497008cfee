//! `fencelock-app`: one instance of the reference service. Configure with environment variables
//! (see `configuration.rs`); run three behind a load balancer with `cargo xtask up`.

use fencelock_app::configuration::Settings;
use fencelock_app::startup::Application;
use fencelock_app::telemetry;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("fencelock-app: {err}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_logging(settings.log_format);
    let application = match Application::build(settings).await {
        Ok(application) => application,
        Err(err) => {
            tracing::error!(%err, "cannot start");
            eprintln!("fencelock-app: cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    match application.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fencelock-app: {err}");
            ExitCode::FAILURE
        }
    }
}
