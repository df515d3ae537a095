//! `usage-sync serve`: the component's `POST /run` over HTTP, each request in
//! its own sandboxed instance under the same policy, keys and limits as `run`.

use crate::args::ServeArgs;
use crate::cli::credentials;
use crate::options::default_options;
use crate::outcome::{Failure, exit, print_failure};
use crate::sandbox::RunConfig;
use std::sync::Arc;

/// Serves until Ctrl-C; the exit status says how it ended.
pub(crate) async fn serve(args: ServeArgs) -> u8 {
    let credentials = match credentials() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let prepared = (|| {
        let (policy, endpoints) = args.endpoints.resolve()?;
        let limits = args.sandbox.limits()?;
        // The request body carries the options; these are unused.
        let config = RunConfig::new(
            policy,
            endpoints,
            default_options(),
            credentials.clone(),
            limits,
        );
        Ok::<_, Failure>((
            Arc::new(args.sandbox.sandbox(None, &limits)?),
            Arc::new(config),
        ))
    })();
    let (sandbox, config) = match prepared {
        Ok(p) => p,
        Err(failure) => return print_failure(&failure, Some(&credentials)),
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            let failure = Failure::BadInput(format!("cannot listen on {}: {e}", args.listen));
            return print_failure(&failure, Some(&credentials));
        }
    };
    let address = listener.local_addr().unwrap_or(args.listen);
    eprintln!("usage-sync: serving POST /run on http://{address}/ (Ctrl-C stops)");
    loop {
        let (client, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("usage-sync: accepting a connection: {e}");
                    continue;
                }
            },
            _ = tokio::signal::ctrl_c() => return exit::OK,
        };
        let (sandbox, config) = (sandbox.clone(), config.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let (sandbox, config) = (sandbox.clone(), config.clone());
                async move { Ok::<_, std::convert::Infallible>(sandbox.serve(&config, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(wasmtime_wasi_http::io::TokioIo::new(client), service)
                .await;
        });
    }
}
