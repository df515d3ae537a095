//! `usage-sync demo`: the real workflow, through the real sandbox, against local
//! Amberflo and Stripe emulators with sample usage. No account, no network.

use super::flags::SandboxArgs;
use crate::bindings::{Endpoints, Inputs};
use crate::egress::policy::{Endpoint, Policy, is_credential_header};
use crate::options::default_options;
use crate::outcome::{Failure, exit, print_failure, progress, render_outputs};
use crate::sandbox::{Limits, RunConfig, Sandbox};
use crate::secrets::{Credentials, Secret};
use clap::Args;
use http::HeaderName;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use usage_sync_emulators::{Amberflo, MeterSpec, Recorded, Stripe, UsageRecord};

#[derive(Args)]
pub(crate) struct DemoArgs {
    #[command(flatten)]
    pub(crate) sandbox: SandboxArgs,
}

impl DemoArgs {
    /// Runs the demo in a sandbox made from the flags, within their limits.
    pub(crate) async fn execute(self) -> u8 {
        let sandbox = self.sandbox.limits().and_then(|limits| {
            let sandbox = self
                .sandbox
                .sandbox(None, &limits, crate::WORKFLOW_COMPONENT)?;
            Ok((sandbox, limits))
        });
        match demo(sandbox).await {
            Ok(code) => code,
            Err(failure) => print_failure(&failure, None),
        }
    }
}

async fn demo(sandbox: Result<(Sandbox, Limits), Failure>) -> Result<u8, Failure> {
    let (sandbox, limits) = sandbox?;
    // Fresh keys each time: the emulators check them like the real APIs do.
    let credentials = Arc::new(Credentials {
        amberflo: Secret::new("demo", random_key("amb_demo_")).expect("ASCII"),
        stripe: Secret::new("demo", random_key("sk_test_demo_")).expect("ASCII"),
    });
    let (yesterday, _) = crate::inputs::previous_utc_day().map_err(Failure::Internal)?;
    let usage = |customer: &str, hour: i64, value: f64| UsageRecord {
        customer_id: customer.into(),
        meter_api_name: "api-calls".into(),
        time: yesterday + hour * 3600,
        value,
    };
    let records = vec![
        usage("acme-corp", 2, 1200.0),
        usage("acme-corp", 9, 850.0),
        usage("acme-corp", 17, 2400.0),
        usage("globex", 11, 999.0),   // another customer: filtered out
        usage("acme-corp", 30, 77.0), // today: outside the window
    ];
    let emulator = |e: std::io::Error| Failure::Internal(format!("starting an emulator: {e}"));
    let amberflo = Amberflo::start(credentials.amberflo.expose(), records).map_err(emulator)?;
    let stripe = Stripe::start(credentials.stripe.expose()).map_err(emulator)?;
    stripe.add_meter(MeterSpec::sum("api_calls"));
    tracing::info!("demo: Amberflo emulator on {}", amberflo.url());
    tracing::info!("demo: Stripe emulator on {}", stripe.url());

    let amberflo_endpoint = Endpoint::parse(&amberflo.url()).map_err(Failure::Internal)?;
    let stripe_endpoint = Endpoint::parse(&stripe.url()).map_err(Failure::Internal)?;
    let config = RunConfig::new(
        Policy::new(&amberflo_endpoint, &stripe_endpoint).map_err(Failure::Internal)?,
        Endpoints {
            amberflo_url: amberflo_endpoint.base_url,
            stripe_url: stripe_endpoint.base_url,
        },
        default_options(),
        credentials.clone(),
        limits,
    )
    .observed(Arc::new(progress(credentials.clone())));
    let inputs = Inputs {
        customer_id: "acme-corp".into(),
        meter_api_name: "api-calls".into(),
        stripe_customer: "cus_DemoAcme".into(),
        stripe_event_name: "api_calls".into(),
        usage_quantity: None,
        start_time: None,
        end_time: None,
    };
    tracing::info!(
        "demo: syncing yesterday's api-calls usage of acme-corp to Stripe customer cus_DemoAcme"
    );
    let outputs = match sandbox.run(&config, inputs.clone()).await {
        Ok(outputs) => outputs,
        Err(failure) => return Ok(print_failure(&failure, Some(&credentials))),
    };
    tracing::info!("\ndemo: what went on the wire (keys redacted):");
    for request in amberflo.requests().iter().chain(&stripe.requests()) {
        tracing::info!("{}", credentials.redact(&describe(request)));
    }

    tracing::info!("\ndemo: running the same window again...");
    let again = match sandbox.run(&config, inputs).await {
        Ok(outputs) => outputs,
        Err(failure) => return Ok(print_failure(&failure, Some(&credentials))),
    };
    tracing::info!(
        "demo: alreadyRecorded = {}; the Stripe emulator holds {} event(s): a rerun never bills twice\n",
        again.events.iter().all(|e| e.already_recorded),
        stripe.events().len()
    );
    println!("{}", credentials.redact(&render_outputs(&outputs)));
    Ok(exit::OK)
}

fn describe(request: &Recorded) -> String {
    let mut text = format!("  {} {}\n", request.method, request.target);
    for (name, value) in &request.headers {
        let sensitive = HeaderName::try_from(name.as_str()).is_ok_and(|n| is_credential_header(&n));
        let value = if sensitive { "[redacted]" } else { value };
        text.push_str(&format!("    {name}: {value}\n"));
    }
    text.push_str(&format!("    {}\n", request.body_text()));
    text
}

fn random_key(prefix: &str) -> String {
    let n = RandomState::new().hash_one(std::time::Instant::now());
    format!("{prefix}{n:016x}")
}
