//! Preallocated instance slots, for the commands that run many instances at
//! once (`sync`, `reconcile`, `serve`).

use wasmtime::{Enabled, PoolingAllocationConfig};

/// Preallocated instance slots for many concurrent runs (`usage-sync sync`):
/// a run then costs no `mmap`/`munmap` of its memory, tables and stack, and
/// resetting a slot touches only the pages the last run dirtied.
#[derive(Clone, Copy, Debug)]
pub struct Pool {
    /// Runs alive at once.
    pub instances: u32,
    /// Each run's memory cap (as in [`Limits`](super::Limits)).
    pub max_memory_bytes: usize,
}

impl Pool {
    /// The pooling allocator's configuration for these slots.
    pub(crate) fn config(self) -> PoolingAllocationConfig {
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
