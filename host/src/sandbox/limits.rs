//! What one run may use: memory, time, requests and response sizes. The
//! sandbox enforces the memory and the deadline, the egress hook the rest.

use crate::egress::Caps;
use std::time::Duration;

/// Resource limits for one run. Each has a default (here) and a flag.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Cap on the guest's linear memory.
    pub max_memory_bytes: usize,
    /// Wall-clock deadline for the whole run.
    pub deadline: Duration,
    /// Connect, first-byte and between-bytes timeout of each request.
    pub request_timeout: Duration,
    /// Cap on each response body.
    pub max_response_bytes: u64,
    /// Cap on the requests of one run.
    pub max_requests: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_memory_bytes: 64 << 20,
            deadline: Duration::from_secs(600),
            request_timeout: Duration::from_secs(30),
            max_response_bytes: 8 << 20,
            max_requests: 5000,
        }
    }
}

impl Limits {
    /// The limits the egress hook enforces.
    pub(crate) fn caps(&self) -> Caps {
        Caps {
            request_timeout: self.request_timeout,
            max_response_bytes: self.max_response_bytes,
            max_requests: self.max_requests,
        }
    }
}
