//! End-to-end tests: the real `usage-sync` binary, the real component and the
//! real wasmtime sandbox, against Amberflo and Stripe emulators on 127.0.0.1.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod backfill;
mod cache;
mod delivery;
mod deploy;
mod failures;
mod happy_path;
mod hostile;
mod ledger;
mod ledger_key;
mod listing;
mod measured;
mod node;
mod operate;
mod periods;
mod reconcile;
mod sandbox;
mod serve;
mod shipped;
mod support;
mod sync;
mod tls;
