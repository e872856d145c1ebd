//! How much memory the producer takes for hostile Metadata, measured with a counting global
//! allocator (the approach of `allocation_bounds.rs`). The counters are process-wide, so this
//! binary holds one test, on a current-thread runtime: nothing else allocates meanwhile but the
//! fake broker on the same thread.

// A global allocator cannot be written without `unsafe`; this file only forwards to `System`.
#![allow(unsafe_code)]

#[path = "support/fake_cluster.rs"]
mod fake_cluster;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fake_cluster::{FakeCluster, FakeTopic};
use kafka_wire::client::{Producer, ProducerConfig, ProducerRecord};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Larger blocks are refused (the process then aborts with "memory allocation of N bytes
/// failed", as `kw produce` did) rather than taken from a shared machine.
const REFUSED_ABOVE: usize = 1 << 30;

fn grew(n: usize) {
    let now = CURRENT.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(n: usize) {
    CURRENT.fetch_sub(n, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > REFUSED_ABOVE {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > REFUSED_ABOVE {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > REFUSED_ABOVE {
            return std::ptr::null_mut();
        }
        // Counted as holding both blocks for a moment, as a moving realloc does.
        grew(new_size);
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        shrank(if p.is_null() { new_size } else { layout.size() });
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MIB: usize = 1 << 20;

/// A Metadata answer with a partition index near 2^31 (two partitions listed): the producer's
/// leader table was sized by the index, `vec![-1; index + 1]`, 8 GiB of i32 (and `+ 1` overflowed
/// in a debug build for `i32::MAX`). Now it is sized by the answer's length and the stray index
/// is ignored: sending to the topic takes well under a MiB beyond what was held before, and the
/// record goes to the partition that exists.
#[tokio::test(flavor = "current_thread")]
async fn regression_a_huge_partition_index_does_not_size_the_leader_table() {
    for index in [i32::MAX - 1, i32::MAX] {
        let cluster = FakeCluster::start(1, vec![FakeTopic::new("t", &[(0, 1), (index, 1)])]).await;
        let producer = Producer::new(ProducerConfig::new(&cluster.addr(1)).linger(Duration::ZERO))
            .await
            .expect("connect to the fake broker");
        let base = CURRENT.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let delivery = producer.send(ProducerRecord::new("t", "v")).await.expect("send");
        let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
        println!("partition index {index}: peak {peak} B while learning the topic and sending");
        assert!(peak < MIB, "learning a topic with partition index {index} took {peak} B");
        let metadata = tokio::time::timeout(Duration::from_secs(20), delivery)
            .await
            .expect("timed out waiting for the acknowledgement")
            .expect("record");
        assert_eq!(metadata.topic_partition.partition, 0);
        producer.close().await.unwrap();
    }
}
