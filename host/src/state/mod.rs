//! What usage-sync remembers between runs, in its state directory: where
//! each source was billed (the mapping history), this tool's recent writes
//! (Stripe's summaries lag behind them), `sync`'s journals, and where the
//! last sync's rows at once ended (the next one's start).

pub mod history;
pub mod lined;
pub mod periods;
pub mod recent;
pub mod state_dir;
pub mod warm_start;

pub use history::{History, Placement, SourceKey};
pub use periods::PeriodEnds;
pub use recent::{Mark, Recent};
pub use state_dir::StateDir;
