//! The wasmtime sandbox: one engine, the component, the limits of a run, and
//! what a run's result means. The HTTP boundary is in [`crate::egress`].
//!
//! The guest gets wasi:http outgoing, clocks, random and stderr. It gets no
//! environment, no arguments, no files and no sockets; its stdout is discarded
//! so it cannot corrupt the host's JSON output.

use crate::bindings::exports::usage_sync::workflow::workflow::Guest as Workflow;
use crate::bindings::{
    CustomerUsage, Endpoints, Inputs, Meter, Options, Reconciliation, UsageQuery, UsageSyncPre,
    WorkflowError,
};
use crate::cache;
use crate::egress::policy::Policy;
use crate::egress::transport::{Transport, Trust};
use crate::egress::{Egress, Observer, RateLimiter, RunLog};
use crate::limits::Limits;
use crate::outcome::{ExitStatus, Failure, Outputs};
use crate::secrets::Credentials;
use crate::verdict::classify;
use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, Full};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use usage_sync_report::{Delivery, keys};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::error::Context as _;
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter,
    Store,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// What one run's guest may print on stderr.
const GUEST_STDERR_CAP: usize = 1 << 20;

/// How often the engine's epoch advances; the deadline's resolution.
const TICK: Duration = Duration::from_millis(10);

/// Preallocated instance slots for many concurrent runs (`usage-sync sync`):
/// a run then costs no `mmap`/`munmap` of its memory, tables and stack, and
/// resetting a slot touches only the pages the last run dirtied.
#[derive(Clone, Copy, Debug)]
pub struct Pool {
    /// Runs alive at once.
    pub instances: u32,
    /// Each run's memory cap (as in [`Limits`]).
    pub max_memory_bytes: usize,
}

impl Pool {
    fn config(self) -> PoolingAllocationConfig {
        // The component holds a few core instances (the program and the
        // adapters wit-component adds), each with at most one memory and table.
        const CORE_PER_COMPONENT: u32 = 8;
        let n = self.instances.max(1);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(n)
            .total_core_instances(n * CORE_PER_COMPONENT)
            .total_memories(n * CORE_PER_COMPONENT)
            .total_tables(n * CORE_PER_COMPONENT)
            .total_stacks(n)
            .max_memory_size(self.max_memory_bytes)
            .pagemap_scan(Enabled::Auto)
            .linear_memory_keep_resident(256 << 10)
            .table_keep_resident(64 << 10)
            .async_stack_keep_resident(64 << 10);
        pool
    }
}

/// Everything a run needs besides the inputs.
#[derive(Clone)]
pub struct RunConfig {
    /// Where the guest may go, and with which key.
    pub policy: Arc<Policy>,
    /// The providers' base URLs, as the guest sees them.
    pub endpoints: Endpoints,
    /// The workflow's options.
    pub options: Options,
    /// The keys the host attaches.
    pub credentials: Arc<Credentials>,
    /// What one run may use.
    pub limits: Limits,
    /// Called for each request as it completes (progress lines).
    pub observer: Option<Observer>,
    /// Shared pace of Stripe requests, for many runs at once.
    pub stripe_pace: Option<Arc<RateLimiter>>,
    /// The pooled connections every run of this configuration shares.
    pub transport: Transport,
}

impl RunConfig {
    /// A run's configuration, with no progress observer and no shared pace.
    pub fn new(
        policy: Policy,
        endpoints: Endpoints,
        options: Options,
        credentials: Arc<Credentials>,
        limits: Limits,
    ) -> RunConfig {
        RunConfig {
            policy: Arc::new(policy),
            endpoints,
            options,
            credentials,
            limits,
            observer: None,
            stripe_pace: None,
            transport: Transport::new(&Trust::default(), limits.request_timeout)
                .expect("the built-in roots make a TLS configuration"),
        }
    }

    /// The same, with HTTPS trusting `trust`.
    pub fn trusting(self, trust: &Trust) -> Result<RunConfig, String> {
        let transport = Transport::new(trust, self.limits.request_timeout)?;
        Ok(RunConfig { transport, ..self })
    }

    /// The same, with `observer` called for every request.
    pub fn observed(self, observer: Observer) -> RunConfig {
        RunConfig {
            observer: Some(observer),
            ..self
        }
    }

    /// The same, with Stripe requests paced by `pace` (shared by many runs).
    pub fn paced(self, pace: Arc<RateLimiter>) -> RunConfig {
        RunConfig {
            stripe_pace: Some(pace),
            ..self
        }
    }
}

/// Marks a `serve` answer the host made because the run failed in the
/// sandbox (its exit status), not the component's own answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostFailure(pub u8);

/// A compiled component, ready to instantiate: every run gets a fresh
/// instance under the run's policy, keys and limits.
///
/// Syncing yesterday's usage of one customer, as `usage-sync run` does:
///
/// ```no_run
/// use std::sync::Arc;
/// use usage_sync::bindings::{Endpoints, Inputs};
/// use usage_sync::limits::Limits;
/// use usage_sync::options::default_options;
/// use usage_sync::outcome::{Failure, render_outputs};
/// use usage_sync::egress::policy::{Endpoint, Policy};
/// use usage_sync::sandbox::{RunConfig, Sandbox};
/// use usage_sync::secrets::Credentials;
///
/// # async fn example() -> Result<(), Failure> {
/// let sandbox = Sandbox::new(usage_sync::DEFAULT_COMPONENT)
///     .map_err(|e| Failure::Internal(e.to_string()))?;
/// let amberflo = Endpoint::parse("https://app.amberflo.io").map_err(Failure::BadInput)?;
/// let stripe = Endpoint::parse("https://api.stripe.com").map_err(Failure::BadInput)?;
/// let config = RunConfig::new(
///     Policy::new(&amberflo, &stripe).map_err(Failure::BadInput)?,
///     Endpoints {
///         amberflo_url: amberflo.base_url,
///         stripe_url: stripe.base_url,
///     },
///     default_options(),
///     // From AMBERFLO_API_KEY and STRIPE_API_KEY; the guest never sees them.
///     Arc::new(Credentials::from_env().map_err(Failure::BadInput)?),
///     Limits::default(),
/// );
/// let inputs = Inputs {
///     customer_id: "acme-corp".into(),
///     meter_api_name: "api-calls".into(),
///     stripe_customer: "cus_NffrFeUfNV2Hib".into(),
///     stripe_event_name: "api_calls".into(),
///     usage_quantity: None,
///     // Neither bound: the previous full UTC day.
///     start_time: None,
///     end_time: None,
/// };
/// let outputs = sandbox.run(&config, inputs).await?;
/// println!("{}", render_outputs(&outputs, false));
/// # Ok(())
/// # }
/// ```
pub struct Sandbox {
    engine: Engine,
    pre: UsageSyncPre<RunState>,
    /// The component's `wasi:http/incoming-handler`, when it exports one.
    proxy: Option<ProxyPre<RunState>>,
}

impl Sandbox {
    /// Compiles `wasm` (a component binary).
    pub fn new(wasm: &[u8]) -> wasmtime::Result<Sandbox> {
        Ok(Sandbox::load(wasm, None, None)?.0)
    }

    /// Compiles `wasm`, or loads it compiled from the cache in `cache_dir`.
    /// With a `pool`, instances come from preallocated slots (for many runs).
    pub fn load(
        wasm: &[u8],
        cache_dir: Option<&Path>,
        pool: Option<Pool>,
    ) -> wasmtime::Result<(Sandbox, cache::Source)> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        if let Some(pool) = pool {
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool.config()));
        }
        let engine = Engine::new(&config)?;
        let (component, source) =
            cache::load(&engine, wasm, cache_dir).context("the file is not a valid component")?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        let instance_pre = linker.instantiate_pre(&component)?;
        let proxy = ProxyPre::new(instance_pre.clone()).ok();
        let pre = UsageSyncPre::new(instance_pre)
            .context("the component does not export the usage-sync workflow")?;
        start_ticker(&engine);
        Ok((Sandbox { engine, pre, proxy }, source))
    }

    /// The imports the component asks for, as `name` strings.
    pub fn imports(&self) -> Vec<String> {
        self.pre
            .instance_pre()
            .component()
            .component_type()
            .imports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// Runs the workflow once, in a fresh instance.
    pub async fn run(&self, config: &RunConfig, inputs: Inputs) -> Result<Outputs, Failure> {
        self.call(config, &inputs.customer_id, async |guest, store| {
            let answer = guest
                .call_run(store, &config.endpoints, &config.options, &inputs)
                .await?;
            outputs(answer)
        })
        .await
    }

    /// The workflow with the meter already found by [`Self::find_meter`].
    pub async fn run_with_meter(
        &self,
        config: &RunConfig,
        inputs: Inputs,
        meter: &Meter,
    ) -> Result<Outputs, Failure> {
        self.call(config, &inputs.customer_id, async |guest, store| {
            let answer = guest
                .call_run_with_meter(store, &config.endpoints, &config.options, &inputs, meter)
                .await?;
            outputs(answer)
        })
        .await
    }

    /// Step 2 alone, in a fresh instance, with the meter from
    /// [`Self::find_meter`] and step 1's answer from [`Self::query_usage`].
    pub async fn record_usage(
        &self,
        config: &RunConfig,
        inputs: Inputs,
        usage_result: String,
        meter: &Meter,
    ) -> Result<Outputs, Failure> {
        self.call(config, &inputs.customer_id, async |guest, store| {
            let answer = guest
                .call_record_usage(
                    store,
                    &config.endpoints,
                    &config.options,
                    &inputs,
                    &usage_result,
                    meter,
                )
                .await?;
            outputs(answer)
        })
        .await
    }

    /// One row's reconciliation, read-only, in a fresh instance, with the
    /// meter and step 1's answer given.
    pub async fn reconcile(
        &self,
        config: &RunConfig,
        inputs: Inputs,
        usage_result: String,
        meter: &Meter,
        tolerance: &str,
    ) -> Result<Reconciliation, Failure> {
        self.call(config, &inputs.customer_id, async |guest, store| {
            guest
                .call_reconcile(
                    store,
                    &config.endpoints,
                    &config.options,
                    &inputs,
                    &usage_result,
                    meter,
                    tolerance,
                )
                .await
        })
        .await
    }

    /// The Stripe meter of `event_name`, checked for the run's interval, in a
    /// fresh instance.
    pub async fn find_meter(&self, config: &RunConfig, event_name: &str) -> Result<Meter, Failure> {
        self.call(config, "", async |guest, store| {
            guest
                .call_find_meter(store, &config.endpoints, &config.options, event_name)
                .await
        })
        .await
    }

    /// Step 1 for many customers, in a fresh instance.
    pub async fn query_usage(
        &self,
        config: &RunConfig,
        query: UsageQuery,
    ) -> Result<Vec<CustomerUsage>, Failure> {
        self.call(config, "", async |guest, store| {
            guest
                .call_query_usage(store, &config.endpoints, &config.options, &query)
                .await
        })
        .await
    }

    /// A fresh store for one run, with the run's log of what the host saw.
    /// `env` is the guest's whole environment: empty, but for `serve`.
    fn store(
        &self,
        config: &RunConfig,
        env: &[(&str, &str)],
        customer: &str,
    ) -> (Store<RunState>, Arc<Mutex<RunLog>>) {
        let log = Arc::new(Mutex::new(RunLog::default()));
        let limits = config.limits;
        let mut wasi = WasiCtx::builder();
        wasi.stderr(crate::guest_stderr::stream(
            config.credentials.clone(),
            GUEST_STDERR_CAP,
        ))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
        for (name, value) in env {
            wasi.env(name, value);
        }
        let state = RunState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: Egress {
                policy: config.policy.clone(),
                credentials: config.credentials.clone(),
                limits,
                log: log.clone(),
                observer: config.observer.clone(),
                in_flight: Default::default(),
                stripe_pace: config.stripe_pace.clone(),
                transport: config.transport.clone(),
                customer: customer.into(),
            },
            memory: MemoryCap {
                max: limits.max_memory_bytes,
                exceeded: false,
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.memory);
        let ticks = limits.deadline.as_millis() / TICK.as_millis();
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX).saturating_add(1));
        store.epoch_deadline_trap();
        (store, log)
    }

    /// Answers one HTTP request with the component's `wasi:http/incoming-handler`,
    /// in a fresh instance under the same policy, keys and limits as a run. The
    /// guest's environment holds the two provider URLs, never a key, and says
    /// that the host checked the caller's token (which the guest never sees:
    /// the `Authorization` header is removed).
    pub async fn serve(
        &self,
        config: &RunConfig,
        request: hyper::Request<Bytes>,
    ) -> Response<HyperOutgoingBody> {
        match self.handle(config, request).await {
            Ok(response) => response,
            Err(failure) => {
                let mut response = failure_response(&failure, &config.credentials);
                // For the host's metrics; extensions never go on the wire.
                response
                    .extensions_mut()
                    .insert(HostFailure(failure.exit_code()));
                response
            }
        }
    }

    async fn handle(
        &self,
        config: &RunConfig,
        request: hyper::Request<Bytes>,
    ) -> Result<Response<HyperOutgoingBody>, Failure> {
        let proxy = self.proxy.clone().ok_or_else(|| {
            Failure::BadInput("the component does not export wasi:http/incoming-handler".into())
        })?;
        let env = [
            ("AMBERFLO_BASE_URL", config.endpoints.amberflo_url.as_str()),
            ("STRIPE_BASE_URL", config.endpoints.stripe_url.as_str()),
            (keys::SERVE_AUTH_ENV, keys::SERVE_AUTH_BY_HOST),
        ];
        let (mut parts, body) = request.into_parts();
        parts.headers.remove(http::header::AUTHORIZATION);
        let body = Full::new(body).map_err(|never| -> wasmtime_wasi_http::Error { match never {} });
        let request = hyper::Request::from_parts(parts, body);
        let (mut store, log) = self.store(config, &env, "");
        let internal = |e: wasmtime::Error| Failure::Internal(format!("{e:#}"));
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let request = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .map_err(internal)?;
        let out = store
            .data_mut()
            .http()
            .new_response_outparam(sender)
            .map_err(internal)?;
        let limits = config.limits;
        let task = tokio::spawn(async move {
            let run = async {
                let instance = proxy.instantiate_async(&mut store).await?;
                instance
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, request, out)
                    .await
            };
            let result = tokio::time::timeout(limits.deadline, run).await;
            (result, store.data().memory.exceeded)
        });
        // The guest writes its whole answer before `handle` returns: take it in
        // while the guest runs, then let the sandbox's verdict overrule it.
        let answer = async {
            match receiver.await {
                Ok(Ok(response)) => {
                    let (parts, body) = response.into_parts();
                    match body.collect().await {
                        Ok(body) => Ok(Some((parts, body.to_bytes()))),
                        Err(code) => Err(format!("{code:?}")),
                    }
                }
                Ok(Err(code)) => Err(format!("{code:?}")),
                Err(_) => Ok(None),
            }
        };
        let (answer, finished) = tokio::join!(answer, task);
        let (result, memory_exceeded) =
            finished.map_err(|e| Failure::Internal(format!("the run's task failed: {e}")))?;
        let seen = std::mem::take(&mut *log.lock().unwrap_or_else(PoisonError::into_inner));
        let result = result.map(|r| r.map(Ok::<(), WorkflowError>));
        let delivery = match seen.stripe_written() {
            true => Delivery::Unknown,
            false => Delivery::NotSent,
        };
        classify(result, memory_exceeded, seen, &limits)?;
        match answer {
            Ok(Some((mut parts, body))) => {
                // Scrubbing may change the length; hyper sets it from the body.
                let body = config.credentials.redact(&String::from_utf8_lossy(&body));
                parts.headers.remove(http::header::CONTENT_LENGTH);
                Ok(Response::from_parts(parts, full(Bytes::from(body))))
            }
            Ok(None) => Err(Failure::Sandbox(
                "the component returned without answering the request".into(),
                delivery,
            )),
            Err(e) => Err(Failure::Sandbox(
                format!("the component's answer broke off: {e}"),
                delivery,
            )),
        }
    }

    /// One export of the workflow, called in a fresh instance under the run's
    /// limits, and the verdict on what happened.
    async fn call<T>(
        &self,
        config: &RunConfig,
        customer: &str,
        export: impl AsyncFnOnce(
            &Workflow,
            &mut Store<RunState>,
        ) -> wasmtime::Result<Result<T, WorkflowError>>,
    ) -> Result<T, Failure> {
        let limits = config.limits;
        let (mut store, log) = self.store(config, &[], customer);
        let call = async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            export(instance.usage_sync_workflow_workflow(), &mut store).await
        };
        let result = tokio::time::timeout(limits.deadline, call).await;
        let memory_exceeded = store.data().memory.exceeded;
        let seen = std::mem::take(&mut *log.lock().unwrap_or_else(PoisonError::into_inner));
        classify(result, memory_exceeded, seen, &limits)
    }
}

/// A run's answer as the report's outputs; a mismatch is our bug, an internal error.
fn outputs(
    answer: Result<crate::bindings::Outputs, WorkflowError>,
) -> wasmtime::Result<Result<Outputs, WorkflowError>> {
    match answer {
        Ok(o) => Ok(Ok(
            usage_sync_report::from_wit(&o).map_err(wasmtime::Error::msg)?
        )),
        Err(e) => Ok(Err(e)),
    }
}

/// The HTTP answer `usage-sync serve` gives for a failure of the host's own.
pub fn failure_response(
    failure: &Failure,
    credentials: &Credentials,
) -> Response<HyperOutgoingBody> {
    json_response(
        failure.http_status(),
        Bytes::from(credentials.redact(&failure.render())),
    )
}

fn full(body: Bytes) -> HyperOutgoingBody {
    Full::new(body)
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn json_response(status: u16, body: Bytes) -> Response<HyperOutgoingBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = http::StatusCode::from_u16(status).expect("a valid status");
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

struct RunState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: Egress,
    memory: MemoryCap,
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RunState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

struct MemoryCap {
    max: usize,
    exceeded: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _: usize,
        desired: usize,
        _: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _: usize,
        desired: usize,
        _: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Advances the engine's epoch until the engine is dropped.
fn start_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("usage-sync-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })
        .expect("spawning the epoch thread");
}
