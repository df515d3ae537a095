//! The engine and the component: compiled once, linked to wasi and wasi:http,
//! and instantiated afresh in its own store for every run, under the run's
//! memory cap and deadline.

use crate::bindings::WorkflowError;
use crate::egress::{Egress, RunLog};
use crate::outcome::Failure;
use crate::sandbox::exports::{Export, Exports};
use crate::sandbox::verdict::classify;
use crate::sandbox::{Pool, RunConfig, cache};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use wasmtime::component::{
    ComponentNamedList, InstancePre, Lift, Linker, Lower, ResourceTable, TypedFunc,
};
use wasmtime::error::Context as _;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, ResourceLimiter, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// What one run's guest may print on stderr.
const GUEST_STDERR_CAP: usize = 1 << 20;

/// How often the engine's epoch advances; the deadline's resolution.
const TICK: Duration = Duration::from_millis(10);

/// A compiled component, ready to instantiate: every run gets a fresh
/// instance under the run's policy, keys and limits.
///
/// Syncing yesterday's usage of one customer, as `usage-sync run` does:
///
/// ```no_run
/// use std::sync::Arc;
/// use usage_sync::bindings::{Endpoints, Inputs};
/// use usage_sync::{
///     Credentials, Endpoint, Failure, Limits, Policy, RunConfig, Sandbox, default_options,
///     render_outputs,
/// };
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
/// println!("{}", render_outputs(&outputs));
/// # Ok(())
/// # }
/// ```
pub struct Sandbox {
    engine: Engine,
    pre: InstancePre<RunState>,
    /// Where the workflow's exports are, found once.
    pub(crate) exports: Exports,
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
        // For `perf`: the guest's functions by name in /tmp/perf-PID.map.
        let perf_map = std::env::var_os("USAGE_SYNC_PERF_MAP").is_some();
        if perf_map {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        if let Some(pool) = pool {
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool.config()));
        }
        let engine = Engine::new(&config)?;
        let (component, source) = cache::load(&engine, wasm, cache_dir, !perf_map)
            .context("the file is not a valid component")?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        let instance_pre = linker.instantiate_pre(&component)?;
        let proxy = ProxyPre::new(instance_pre.clone()).ok();
        let exports = Exports::find(&component)
            .context("the component does not export the usage-sync workflow")?;
        start_ticker(&engine);
        let sandbox = Sandbox {
            engine,
            pre: instance_pre,
            exports,
            proxy,
        };
        Ok((sandbox, source))
    }

    /// The imports the component asks for, as `name` strings.
    pub fn imports(&self) -> Vec<String> {
        self.pre
            .component()
            .component_type()
            .imports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// The component's exports, as `name` strings.
    pub fn exports(&self) -> Vec<String> {
        self.pre
            .component()
            .component_type()
            .exports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// The memories and tables an instance of the component needs.
    #[cfg(test)]
    pub(crate) fn resources_required(&self) -> wasmtime::ResourcesRequired {
        // `None` only for a component that instantiates modules it imports.
        self.pre
            .component()
            .resources_required()
            .expect("a component that imports no modules")
    }

    /// The component's `wasi:http/incoming-handler`, when it exports one
    /// (for `serve`).
    pub(crate) fn proxy(&self) -> Option<ProxyPre<RunState>> {
        self.proxy.clone()
    }

    /// A fresh store for one run, with the run's log of what the host saw.
    /// `env` is the guest's whole environment: empty, but for `serve`.
    pub(crate) fn store(
        &self,
        config: &RunConfig,
        env: &[(&str, &str)],
        customer: &str,
    ) -> (Store<RunState>, Arc<Mutex<RunLog>>) {
        let log = Arc::new(Mutex::new(RunLog::default()));
        let limits = config.limits;
        let mut wasi = WasiCtx::builder();
        wasi.stderr(crate::sandbox::guest_stderr::stream(
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
                caps: limits.caps(),
                log: log.clone(),
                observer: config.observer.clone(),
                in_flight: Default::default(),
                stripe_pace: config.stripe_pace.clone(),
                concurrency: config.concurrency.clone(),
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

    /// One export of the workflow, called with `params` in a fresh instance
    /// under the run's limits; its answer made into `T` by `answer`, and the
    /// verdict on what happened. Only that export is type-checked (against
    /// `P` and `R`), once per sandbox: the generated bindings would check all
    /// eight in every run.
    pub(super) async fn call<P, R, T>(
        &self,
        config: &RunConfig,
        customer: &str,
        export: impl FnOnce(&Exports) -> &Export,
        params: P,
        answer: impl FnOnce(R) -> wasmtime::Result<Result<T, WorkflowError>>,
    ) -> Result<T, Failure>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        (R,): ComponentNamedList + Lift + Send + Sync + 'static,
    {
        let limits = config.limits;
        let (mut store, log) = self.store(config, &[], customer);
        let call = async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            let export = export(&self.exports);
            let func = instance
                .get_func(&mut store, export.index)
                .ok_or_else(|| wasmtime::format_err!("the component lost an export"))?;
            let types = std::any::type_name::<(P, R)>();
            let func = if export.checked.get() == Some(&types) {
                // SAFETY: an earlier instance of this very component checked
                // this export against Rust types of this name. `type_name`
                // is not unique among all types, but each export is called
                // from one place in `exports.rs`, always with one tuple of
                // the bindings' types, which have distinct names. A
                // component's export types are the same in each of its
                // instances; only resource types differ per instance, and
                // the workflow's exports take none.
                unsafe { TypedFunc::<P, (R,)>::new_unchecked(func) }
            } else {
                let typed = func.typed::<P, (R,)>(&store)?;
                let _ = export.checked.set(types);
                typed
            };
            let (result,) = func.call_async(&mut store, params).await?;
            answer(result)
        };
        let result = tokio::time::timeout(limits.deadline, call).await;
        let memory_exceeded = store.data().memory_exceeded();
        classify(result, memory_exceeded, take_log(&log), &limits)
    }
}

/// What the host saw of a run, taken once the run is over.
pub(crate) fn take_log(log: &Mutex<RunLog>) -> RunLog {
    std::mem::take(&mut *log.lock().unwrap_or_else(PoisonError::into_inner))
}

/// One run's store: its wasi contexts, its egress hook and its memory cap.
pub(crate) struct RunState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: Egress,
    memory: MemoryCap,
}

impl RunState {
    /// Whether the guest asked for more memory than its cap allows.
    pub(crate) fn memory_exceeded(&self) -> bool {
        self.memory.exceeded
    }
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
