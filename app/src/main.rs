//! `dlock-app`: one instance of the reference service. Configure with environment variables
//! (see `configuration.rs`); run three behind a load balancer with `cargo xtask up`.

use dlock_app::configuration::Settings;
use dlock_app::startup::Application;
use dlock_app::telemetry;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("dlock-app: {err}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_logging(settings.log_format);
    let application = match Application::build(settings).await {
        Ok(application) => application,
        Err(err) => {
            tracing::error!(%err, "cannot start");
            eprintln!("dlock-app: cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    match application.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dlock-app: {err}");
            ExitCode::FAILURE
        }
    }
}
