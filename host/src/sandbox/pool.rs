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

/// Core instances a component instance may hold: the program and the few
/// glue modules wit-component adds (the workflow has three), with room.
const CORE_INSTANCES_PER_COMPONENT: u32 = 8;
/// Linear memories a component instance may hold: the program's (the glue
/// has none), and one for an adapter's. Each slot reserves its address
/// space up front (4 GiB and a guard): one per core instance, as before,
/// was 2 TiB for `sync`'s 64 runs, and more than valgrind can manage, so
/// the bench could not count a batched sync's instructions.
pub(crate) const MEMORIES_PER_COMPONENT: u32 = 2;
/// Tables a component instance may hold: the program's and the glue's (the
/// workflow has two), with room.
pub(crate) const TABLES_PER_COMPONENT: u32 = 4;

impl Pool {
    /// The pooling allocator's configuration for these slots.
    pub(crate) fn config(self) -> PoolingAllocationConfig {
        let n = self.instances.max(1);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(n)
            .total_core_instances(n * CORE_INSTANCES_PER_COMPONENT)
            .total_memories(n * MEMORIES_PER_COMPONENT)
            .total_tables(n * TABLES_PER_COMPONENT)
            .total_stacks(n)
            .max_memory_size(self.max_memory_bytes)
            .pagemap_scan(Enabled::Auto)
            .linear_memory_keep_resident(256 << 10)
            .table_keep_resident(64 << 10)
            .async_stack_keep_resident(64 << 10);
        pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sandbox;

    /// Every build of the workflow fits a pool slot: a component that needs
    /// more memories or tables than a slot holds fails every pooled run.
    #[test]
    fn every_build_of_the_workflow_fits_a_slot() {
        for wasm in [crate::DEFAULT_COMPONENT, crate::WORKFLOW_COMPONENT] {
            let needs = Sandbox::new(wasm).unwrap().resources_required();
            let (memories, tables) = (needs.num_memories, needs.num_tables);
            assert!(memories <= MEMORIES_PER_COMPONENT, "{memories} memories");
            assert!(tables <= TABLES_PER_COMPONENT, "{tables} tables");
        }
    }
}
