//! The deployment files in `deploy/` (Spin, SpinKube, wasmCloud): they parse,
//! allow exactly the two provider hosts, and hand over the keys as the builds
//! for those platforms read them, through `wasi:config/store`, which a small
//! wasmtime host here provides as Spin and wasmCloud do.

use crate::support::*;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use usage_sync::bindings::{Endpoints, Inputs, Interval, Options, UsageSync};
use wasmtime::component::{Component, ComponentType, Lift, Linker, Lower, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

const HOSTS: [&str; 2] = ["https://app.amberflo.io", "https://api.stripe.com"];
const SPIN: &str = env!("USAGE_SYNC_SPIN_COMPONENT");
const WASMCLOUD: &str = env!("USAGE_SYNC_WASMCLOUD_COMPONENT");

/// A file of `deploy/`.
pub(crate) fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

/// A YAML file of `deploy/`, parsed.
pub(crate) fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(deploy(path)).unwrap();
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn spin_allows_exactly_the_provider_hosts_and_takes_the_keys_as_secret_variables() {
    let text = std::fs::read_to_string(deploy("spin/spin.toml")).unwrap();
    let manifest: toml::Table = toml::from_str(&text).expect("spin.toml parses");
    assert_eq!(manifest["spin_manifest_version"].as_integer(), Some(2));
    let trigger = &manifest["trigger"]["http"].as_array().unwrap()[0];
    assert_eq!(trigger["route"].as_str(), Some("/run"));
    let name = trigger["component"].as_str().unwrap();
    let component = &manifest["component"][name];

    let allowed: Vec<&str> = component["allowed_outbound_hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert_eq!(allowed, HOSTS);
    let environment = component["environment"].as_table().unwrap();
    assert_eq!(environment["AMBERFLO_BASE_URL"].as_str(), Some(HOSTS[0]));
    assert_eq!(environment["STRIPE_BASE_URL"].as_str(), Some(HOSTS[1]));
    assert!(
        !text.contains("sk_") && !environment.keys().any(|k| k.ends_with("API_KEY")),
        "no key in the manifest"
    );
    // The keys, and the token POST /run callers must present.
    for key in [
        "amberflo_api_key",
        "stripe_api_key",
        "usage_sync_serve_token",
    ] {
        let variable = &manifest["variables"][key];
        assert_eq!(variable["secret"].as_bool(), Some(true), "{key}");
        assert_eq!(variable["required"].as_bool(), Some(true), "{key}");
        assert_eq!(
            component["variables"][key].as_str(),
            Some(format!("{{{{ {key} }}}}").as_str())
        );
    }
    // The source is the Spin build this repository makes.
    let source = deploy("spin").join(component["source"].as_str().unwrap());
    assert_eq!(
        std::fs::canonicalize(source).unwrap(),
        std::fs::canonicalize(SPIN).unwrap()
    );
}

#[test]
fn spinkube_and_wasmcloud_manifests_parse_and_name_the_keys() {
    let app = yaml("spinkube/spinapp.yaml");
    assert_eq!(app["apiVersion"], "core.spinkube.dev/v1alpha1");
    assert_eq!(app["kind"], "SpinApp");
    assert_eq!(app["spec"]["executor"], "containerd-shim-spin");
    let names: Vec<&str> = app["spec"]["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            assert!(v["valueFrom"]["secretKeyRef"]["name"].is_string(), "{v}");
            v["name"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        names,
        [
            "amberflo_api_key",
            "stripe_api_key",
            "usage_sync_serve_token"
        ]
    );

    let wadm = yaml("wasmcloud/wadm.yaml");
    assert_eq!(wadm["apiVersion"], "core.oam.dev/v1beta1");
    assert_eq!(wadm["kind"], "Application");
    let components = wadm["spec"]["components"].as_array().unwrap();
    let ours = components
        .iter()
        .find(|c| c["name"] == "usage-sync")
        .unwrap();
    assert_eq!(ours["properties"]["config"][0]["name"], "usage-sync-keys");
    let links: Vec<String> = components
        .iter()
        .flat_map(|c| c["traits"].as_array().cloned().unwrap_or_default())
        .filter(|t| t["type"] == "link")
        .map(|t| {
            t["properties"]["interfaces"][0]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(links, ["outgoing-handler", "incoming-handler"]);
    let text = std::fs::read_to_string(deploy("wasmcloud/wadm.yaml")).unwrap();
    assert!(!text.contains("sk_"), "no key in the manifest");
    assert!(
        text.contains("usage_sync_serve_token=..."),
        "the token is config too"
    );
}

/// `wasi:config/store`'s error, as both drafts define it.
#[derive(ComponentType, Lift, Lower, Clone)]
#[component(variant)]
enum ConfigError {
    #[component(name = "upstream")]
    Upstream(String),
    #[component(name = "io")]
    Io(String),
}

struct Platform {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    variables: HashMap<String, String>,
}

impl WasiView for Platform {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Platform {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: wasmtime_wasi_http::default_hooks(),
        }
    }
}

/// Runs a platform build's `run` where nothing attaches keys and the guest's
/// environment is empty: only `variables`, through `wasi:config/store@version`.
fn run_on_platform(wasm: &str, version: &str, p: &Providers, start: i64, end: i64) -> Value {
    let engine = Engine::default();
    let component = Component::from_file(&engine, wasm).unwrap();
    let imports: Vec<String> = component
        .component_type()
        .imports(&engine)
        .map(|(name, _)| name.to_string())
        .collect();
    assert!(
        imports.iter().all(|i| i.starts_with("wasi:")),
        "{imports:?}"
    );
    assert!(imports.contains(&format!("wasi:config/store@{version}")));

    let mut linker = Linker::<Platform>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).unwrap();
    let mut config = linker
        .instance(&format!("wasi:config/store@{version}"))
        .unwrap();
    config
        .func_wrap("get", |store, (key,): (String,)| {
            let value = store.data().variables.get(&key).cloned();
            Ok((Ok::<_, ConfigError>(value),))
        })
        .unwrap();
    config
        .func_wrap("get-all", |store, (): ()| {
            let all: Vec<(String, String)> = store.data().variables.clone().into_iter().collect();
            Ok((Ok::<_, ConfigError>(all),))
        })
        .unwrap();
    let variables = HashMap::from([
        ("amberflo_api_key".to_string(), p.amberflo_key.clone()),
        ("stripe_api_key".to_string(), p.stripe_key.clone()),
    ]);
    let mut store = Store::new(
        &engine,
        Platform {
            wasi: WasiCtx::builder().build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            variables,
        },
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let outputs = runtime.block_on(async {
        let guest = UsageSync::instantiate_async(&mut store, &component, &linker)
            .await
            .unwrap();
        guest
            .usage_sync_workflow_workflow()
            .call_run(
                &mut store,
                &Endpoints {
                    amberflo_url: p.amberflo.url(),
                    stripe_url: p.stripe.url(),
                },
                &Options {
                    max_retries: 0,
                    retry_budget_ms: 10_000,
                    rounding: None,
                    reconcile: false,
                    dry_run: false,
                    interval: Interval::Day,
                    scale: None,
                    true_up: false,
                    allow_decrease: false,
                    settle_hours: 72,
                    attempt_header: false,
                    carry_late_usage: false,
                },
                &Inputs {
                    customer_id: "acme".into(),
                    meter_api_name: "api-calls".into(),
                    stripe_customer: "cus_Acme".into(),
                    stripe_event_name: "api_calls".into(),
                    usage_quantity: None,
                    start_time: Some(start.to_string()),
                    end_time: Some(end.to_string()),
                },
            )
            .await
            .unwrap()
    });
    let outputs = outputs.unwrap_or_else(|e| panic!("{e:?}"));
    serde_json::json!({
        "usageQuantity": outputs.events[0].usage_quantity,
        "meterEventId": outputs.events[0].meter_event_id,
    })
}

#[test]
fn the_spin_and_wasmcloud_builds_take_the_keys_from_the_platforms_variables() {
    let (start, end) = yesterday();
    for (wasm, version) in [(SPIN, "0.2.0-draft-2024-09-27"), (WASMCLOUD, "0.2.0-draft")] {
        let p = Providers::start(vec![usage("acme", "api-calls", start + 60, 42.0)]);
        let outputs = run_on_platform(wasm, version, &p, start, end);
        assert_eq!(outputs["usageQuantity"], "42", "{version}");
        let q = &p.amberflo_requests()[0];
        assert_eq!(q.header("x-api-key"), Some(p.amberflo_key.as_str()));
        let bearer = format!("Bearer {}", p.stripe_key);
        assert_eq!(
            p.stripe_writes()[0].header("authorization"),
            Some(bearer.as_str())
        );
        // The same identifier as every other build: a rerun elsewhere bills nothing twice.
        let ours = Providers::start(vec![usage("acme", "api-calls", start + 60, 42.0)]);
        let run = ours.run(&with_inputs(&window_args(start, end)));
        assert_eq!(run.json()["meterEventId"], outputs["meterEventId"]);
    }
}

/// The nightly CronJob: never two at once, a deadline for a missed start,
/// keys from a Secret mounted as files, exit 2 fails the Job while the other
/// failures count toward its retries, and resource limits.
#[test]
fn the_kubernetes_cronjob_is_a_safe_nightly_billing_job() {
    let job = yaml("kubernetes/cronjob.yaml");
    assert_eq!(job["kind"], "CronJob");
    let spec = &job["spec"];
    assert_eq!(spec["concurrencyPolicy"], "Forbid");
    assert!(spec["startingDeadlineSeconds"].as_u64().unwrap() > 0);
    assert_eq!(spec["timeZone"], "Etc/UTC");
    let job_spec = &spec["jobTemplate"]["spec"];
    let rules = job_spec["podFailurePolicy"]["rules"].as_array().unwrap();
    let fail = rules.iter().find(|r| r["action"] == "FailJob").unwrap();
    assert_eq!(fail["onExitCodes"]["values"], serde_json::json!([2]));
    let count = rules.iter().find(|r| r["action"] == "Count").unwrap();
    for code in [3, 4, 5] {
        assert!(
            count["onExitCodes"]["values"]
                .as_array()
                .unwrap()
                .contains(&code.into())
        );
    }
    let pod = &job_spec["template"]["spec"];
    let container = &pod["containers"][0];
    assert!(container["resources"]["limits"]["memory"].is_string());
    let env = container["env"].as_array().unwrap();
    let mount = &container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "keys")
        .unwrap()["mountPath"];
    for name in ["AMBERFLO_API_KEY_FILE", "STRIPE_API_KEY_FILE"] {
        let var = env.iter().find(|e| e["name"] == name).unwrap();
        assert!(
            var["value"]
                .as_str()
                .unwrap()
                .starts_with(mount.as_str().unwrap()),
            "{name}"
        );
    }
    assert!(
        !env.iter().any(|e| e["name"] == "STRIPE_API_KEY"),
        "no key in the environment"
    );
    let keys = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "keys")
        .unwrap();
    assert!(keys["secret"]["secretName"].is_string());
    let command = container["args"][0].as_str().unwrap();
    assert!(
        command.contains("usage-sync sync") && command.contains("--true-up"),
        "{command}"
    );
    assert_keeps_its_state(pod, container);
    assert!(
        !command.contains("--journal"),
        "a journal per window, by default"
    );
}

/// The state directory outlives the pod (a PersistentVolumeClaim), writable
/// by the pod's user (fsGroup), and usage-sync is pointed inside it.
fn assert_keeps_its_state(pod: &Value, container: &Value) {
    let state = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "state")
        .unwrap();
    let claim = state["persistentVolumeClaim"]["claimName"]
        .as_str()
        .unwrap();
    let pvc = yaml("kubernetes/state-pvc.yaml");
    assert_eq!(pvc["kind"], "PersistentVolumeClaim");
    assert_eq!(pvc["metadata"]["name"], claim);
    let user = &pod["securityContext"]["runAsUser"];
    assert_eq!(&pod["securityContext"]["fsGroup"], user);
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "state")
        .unwrap()["mountPath"]
        .as_str()
        .unwrap();
    let dir = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "USAGE_SYNC_STATE_DIR")
        .unwrap()["value"]
        .as_str()
        .unwrap();
    assert!(
        dir.starts_with(&format!("{mount}/")),
        "{dir} inside {mount}"
    );
}

/// The systemd service and timer: a missed night runs at boot, keys as
/// credentials, and the service confined.
#[test]
fn the_systemd_units_catch_up_load_credentials_and_are_hardened() {
    let read = |name: &str| std::fs::read_to_string(deploy(&format!("systemd/{name}"))).unwrap();
    let lines = |text: &str| -> Vec<String> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#') && l.contains('='))
            .map(String::from)
            .collect()
    };
    let timer = lines(&read("usage-sync.timer"));
    assert!(timer.contains(&"Persistent=true".to_string()));
    assert!(timer.iter().any(|l| l.starts_with("OnCalendar=")));
    let service = lines(&read("usage-sync.service"));
    for expected in [
        "Type=oneshot",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "RestartPreventExitStatus=2",
        "StateDirectory=usage-sync",
        "StateDirectoryMode=0700",
        "Environment=USAGE_SYNC_STATE_DIR=%S/usage-sync",
    ] {
        assert!(service.contains(&expected.to_string()), "{expected}");
    }
    // The credentials' names are what usage-sync reads from $CREDENTIALS_DIRECTORY.
    for key in ["amberflo_api_key", "stripe_api_key"] {
        assert!(
            service
                .iter()
                .any(|l| l.starts_with(&format!("LoadCredential={key}:"))),
            "{key}"
        );
    }
    assert!(
        !read("usage-sync.service").contains("sk_"),
        "no key in the unit"
    );
    // One fixed journal would belong to the first night's window only.
    assert!(!read("usage-sync.service").contains("--journal"));
}

/// The hourly close-periods job: beside the nightly one, on the same state.
#[test]
fn close_periods_runs_every_hour_on_the_nightly_jobs_state() {
    let job = yaml("kubernetes/close-periods-cronjob.yaml");
    assert_eq!(job["kind"], "CronJob");
    assert_eq!(job["spec"]["schedule"], "10 * * * *");
    assert_eq!(job["spec"]["concurrencyPolicy"], "Forbid");
    let pod = &job["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let command = container["args"][0].as_str().unwrap();
    assert!(
        command.starts_with("usage-sync close-periods "),
        "{command}"
    );
    assert_keeps_its_state(pod, container);
    let nightly = yaml("kubernetes/cronjob.yaml");
    let nightly_pod = &nightly["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"], nightly_pod["volumes"],
        "the same keys, mapping and state"
    );

    let read = |name: &str| std::fs::read_to_string(deploy(&format!("systemd/{name}"))).unwrap();
    let timer = read("usage-sync-close-periods.timer");
    assert!(timer.contains("OnCalendar=*-*-* *:10:00 UTC"), "{timer}");
    let service = read("usage-sync-close-periods.service");
    assert!(service.contains("ExecStart=/usr/local/bin/usage-sync close-periods "));
    // The same dynamic user and state directory as the nightly service.
    for line in [
        "User=usage-sync",
        "StateDirectory=usage-sync",
        "Environment=USAGE_SYNC_STATE_DIR=%S/usage-sync",
    ] {
        assert!(service.contains(line), "{line}");
        assert!(read("usage-sync.service").contains(line), "{line}");
    }
}

/// The sharded job: an Indexed Job whose shard count is what usage-sync reads.
#[test]
fn the_indexed_job_shards_the_mapping_as_usage_sync_reads_it() {
    let job = yaml("kubernetes/indexed-job.yaml");
    assert_eq!(job["spec"]["concurrencyPolicy"], "Forbid");
    let spec = &job["spec"]["jobTemplate"]["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    let completions = spec["completions"].as_u64().unwrap();
    assert_eq!(spec["parallelism"].as_u64(), Some(completions));
    let container = &spec["template"]["spec"]["containers"][0];
    let shards = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "USAGE_SYNC_SHARDS")
        .unwrap()["value"]
        .as_str()
        .unwrap();
    assert_eq!(shards.parse::<u64>().unwrap(), completions);
    assert_eq!(container["args"][0], "sync");
    assert_keeps_its_state(&spec["template"]["spec"], container);
}
