//! Buffers for a connection's large response frames (Fetch answers of megabytes), used again
//! once the frame they held is dropped.
//!
//! A frame's records are slices of its buffer, so a Fetch answer's buffer lives until its last
//! record is dropped, and the next answer needs another. Freshly allocated, every page of it is
//! faulted in (and zeroed by the kernel) as the socket's bytes are copied in: on the consumer
//! that was most of its page faults, and an allocator that hands large blocks back to the OS
//! (musl's, whatever the process freed; glibc's, above its mmap threshold) does it for every
//! answer. A buffer returned to the pool keeps its pages.
//!
//! A connection's pool holds idle buffers only while large frames keep coming: a small frame
//! (an empty long poll once the consumer has caught up, any answer of a connection that never
//! gets large ones) frees them, and so does the connection's end, after which a buffer given
//! back is freed at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

/// Frames of this size or more are read into a pooled buffer: below it, a fresh allocation
/// costs little and comes from the allocator's own free lists.
pub(super) const POOLED_FRAME_MIN: usize = 256 * 1024;

/// The most bytes of idle buffers a pool keeps (two Fetch answers of six partitions at the
/// default `max.partition.fetch.bytes`): a buffer returned past it is freed.
const IDLE_MAX_BYTES: usize = 16 * 1024 * 1024;

/// A connection's pool of idle frame buffers, shared with the frames it lent them to.
#[derive(Default)]
pub(super) struct FramePool {
    state: Mutex<Idle>,
    /// Whether `state` may hold idle buffers: a connection whose frames are all small (a
    /// producer's) sheds without taking the lock.
    holds: AtomicBool,
}

#[derive(Default)]
struct Idle {
    buffers: Vec<Vec<u8>>,
    /// The connection has ended: nothing is kept.
    closed: bool,
}

impl FramePool {
    /// An empty buffer with room for `size` bytes: the smallest idle one large enough, or a
    /// new one.
    pub(super) fn take(&self, size: usize) -> Vec<u8> {
        let mut state = self.state();
        let idle = &mut state.buffers;
        let fits = idle.iter().enumerate().filter(|(_, b)| b.capacity() >= size).min_by_key(|(_, b)| b.capacity());
        match fits.map(|(i, _)| i) {
            Some(i) => {
                let mut buf = idle.swap_remove(i);
                buf.clear();
                buf
            }
            None => {
                // None is large enough: the largest idle one is of no use to frames of this size.
                if let Some(i) = idle.iter().enumerate().max_by_key(|(_, b)| b.capacity()).map(|(i, _)| i) {
                    idle.swap_remove(i);
                }
                Vec::with_capacity(size)
            }
        }
    }

    /// The frame read into `buf` (taken from `pool`), as `Bytes` that give the buffer back to
    /// the pool when the last of them is dropped.
    pub(super) fn frame(pool: &Arc<FramePool>, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Lent { buf, pool: pool.clone() })
    }

    /// Frees the idle buffers: the connection's frames are small now.
    pub(super) fn shed(&self) {
        if self.holds.load(Ordering::Relaxed) {
            let mut state = self.state();
            state.buffers = Vec::new();
            self.holds.store(false, Ordering::Relaxed);
        }
    }

    /// Frees the idle buffers, and every buffer given back from now on: the connection ended.
    pub(super) fn close(&self) {
        let mut state = self.state();
        state.closed = true;
        state.buffers = Vec::new();
    }

    fn give_back(&self, buf: Vec<u8>) {
        let mut state = self.state();
        let held: usize = state.buffers.iter().map(Vec::capacity).sum();
        if !state.closed && held + buf.capacity() <= IDLE_MAX_BYTES {
            state.buffers.push(buf);
            self.holds.store(true, Ordering::Relaxed);
        }
    }

    fn state(&self) -> MutexGuard<'_, Idle> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn idle_capacities(&self) -> Vec<usize> {
        let mut caps: Vec<usize> = self.state().buffers.iter().map(Vec::capacity).collect();
        caps.sort_unstable();
        caps
    }
}

/// A pooled buffer holding one frame, owned by the frame's `Bytes`.
struct Lent {
    buf: Vec<u8>,
    pool: Arc<FramePool>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    fn filled(pool: &FramePool, size: usize) -> Vec<u8> {
        let mut buf = pool.take(size);
        buf.resize(size, 7);
        buf
    }

    #[test]
    fn a_frame_gives_its_buffer_back_when_its_last_slice_is_dropped() {
        let pool = Arc::new(FramePool::default());
        let buf = filled(&pool, MIB);
        let at = buf.as_ptr();
        let frame = FramePool::frame(&pool, buf);
        let record = frame.slice(10..20);
        drop(frame);
        assert!(pool.idle_capacities().is_empty(), "a slice still holds the buffer");
        assert_eq!(&record[..], &[7; 10]);
        drop(record);
        assert_eq!(pool.idle_capacities(), [MIB]);

        // The next frame of that size or less is read into the same memory.
        let again = pool.take(MIB / 2);
        assert_eq!((again.as_ptr(), again.len()), (at, 0), "the same buffer, emptied");
        assert!(pool.idle_capacities().is_empty());
    }

    #[test]
    fn the_smallest_buffer_that_fits_is_lent_and_idle_bytes_are_bounded() {
        let pool = Arc::new(FramePool::default());
        let frames: Vec<Bytes> = [6 * MIB, 2 * MIB, 4 * MIB, 8 * MIB]
            .into_iter()
            .map(|size| FramePool::frame(&pool, filled(&pool, size)))
            .collect();
        drop(frames);
        // 6 + 2 + 4 MiB kept; the 8 MiB buffer would pass the 16 MiB bound: freed.
        assert_eq!(pool.idle_capacities(), [2 * MIB, 4 * MIB, 6 * MIB]);
        assert_eq!(pool.take(3 * MIB).capacity(), 4 * MIB);
        assert_eq!(pool.idle_capacities(), [2 * MIB, 6 * MIB]);
        // Nothing fits a larger frame: a new buffer, and the largest idle one is freed.
        assert_eq!(pool.take(7 * MIB).capacity(), 7 * MIB);
        assert_eq!(pool.idle_capacities(), [2 * MIB]);
        pool.shed();
        assert!(pool.idle_capacities().is_empty());
    }

    #[test]
    fn after_the_connection_ends_a_buffer_given_back_is_freed() {
        let pool = Arc::new(FramePool::default());
        let frame = FramePool::frame(&pool, filled(&pool, MIB));
        drop(FramePool::frame(&pool, filled(&pool, MIB)));
        assert_eq!(pool.idle_capacities(), [MIB]);
        pool.close();
        assert!(pool.idle_capacities().is_empty());
        drop(frame);
        assert!(pool.idle_capacities().is_empty());
    }
}
