//! A hostile stand-in for the workflow: it exports the same world, but `run`
//! sends whatever request the test asks for and reports what came back.
//!
//! `customer-id` is the URL; `meter-api-name` is the mode:
//! - `get`: a plain GET;
//! - `own-authorization` / `own-api-key`: sets the credential header itself;
//! - `headers`: a GET that reports every response header it was given;
//! - `spin`: loops forever; `allocate`: asks for far more memory than any cap;
//! - `ambient`: tries environment variables, arguments, files and a raw socket
//!   to the URL's `host:port`.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "usage-sync",
});

use exports::usage_sync::workflow::workflow::{
    Delivery, Endpoints, Guest, Inputs, Options, Outputs, Step, StepFailure, WorkflowError,
};
use serde_json::json;

#[allow(dead_code)]
struct Probe;

impl Guest for Probe {
    fn run(_: Endpoints, _: Options, inputs: Inputs) -> Result<Outputs, WorkflowError> {
        match inputs.meter_api_name.as_str() {
            "spin" => loop {
                std::hint::black_box(0);
            },
            "allocate" => {
                let huge: Vec<u8> = vec![1; 1 << 30];
                std::hint::black_box(&huge);
            }
            "ambient" => return Ok(outputs(ambient(&inputs.customer_id).to_string())),
            _ => {}
        }
        let url = inputs.customer_id;
        let request = waki::Client::new().get(&url);
        let request = match inputs.meter_api_name.as_str() {
            "own-authorization" => request.header("Authorization", "Bearer sk_guest_forged"),
            "own-api-key" => request.header("X-API-KEY", "guest-forged"),
            _ => request,
        };
        let response = request.send().map_err(|e| {
            WorkflowError::StepFailed(StepFailure {
                step: Step::QueryUsage,
                status: None,
                message: format!("probe request failed: {e}"),
                request_id: None,
                delivery: Delivery::NotSent,
                attempts: 1,
                window_start: 0,
                window_end: 0,
                recorded: Vec::new(),
            })
        })?;
        let status = response.status_code();
        let headers: serde_json::Map<String, serde_json::Value> = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect();
        let body = String::from_utf8_lossy(&response.body().unwrap_or_default()).into_owned();
        Ok(outputs(
            json!({ "status": status, "headers": headers, "body": body }).to_string(),
        ))
    }
}

/// What ambient authority the guest can find.
fn ambient(address: &str) -> serde_json::Value {
    let outcome = |r: std::io::Result<()>| match r {
        Ok(()) => "allowed".to_string(),
        Err(e) => format!("refused: {e}"),
    };
    json!({
        "env": std::env::vars().count(),
        "args": std::env::args().count(),
        "files": outcome(std::fs::read_dir("/").map(drop)),
        "cwd": outcome(std::fs::read("secrets.txt").map(drop)),
        "socket": outcome(std::net::TcpStream::connect(address).map(drop)),
    })
}

fn outputs(usage_result: String) -> Outputs {
    Outputs {
        usage_result,
        event_name: String::new(),
        window_start: 0,
        window_end: 0,
        events: Vec::new(),
        planned: Vec::new(),
    }
}

#[cfg(target_arch = "wasm32")]
export!(Probe);
